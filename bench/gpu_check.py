"""GPU check: the smoke recipe's stages on one NVIDIA GPU, then a larger generation load; prints tokens/s per
stage and DPO seconds per step, and writes them as JSON. Called by bench/gpu_check.sh (which installs the GPU
extra first); runs without Prefect, stage by stage, so a failure names the stage.

    python bench/gpu_check.py [--out DIR] [--random-init MODEL_DIR] [--backend auto|vllm|transformers]

``--random-init DIR``: DIR holds the embedded model's config and tokenizer files only; its weights are drawn at
random (seeded). For machines that cannot receive the weights (an offline box with a small upload limit).
Throughput does not depend on the weights' values, but a random model rarely writes an end-of-turn token, so
every answer runs to max_new_tokens and the judge scores are noise: speed figures only.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
QUICK = False


def random_model(src: str, dst: str) -> str:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    cfg = AutoConfig.from_pretrained(src)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)
    model.save_pretrained(dst)
    AutoTokenizer.from_pretrained(src).save_pretrained(dst)
    gen = Path(src, "generation_config.json")
    if gen.is_file():
        Path(dst, "generation_config.json").write_text(gen.read_text())
    return dst


def backend_for(choice: str) -> str:
    if choice != "auto":
        return choice
    try:
        import vllm  # noqa: F401

        return "vllm"
    except ImportError:
        return "transformers"


def smoke_stages(model_path: str | None, backend: str, root: str, report: dict) -> None:
    """The smoke recipe's iteration 1, stage by stage, on the GPU."""
    from metareward.pipeline import stages
    from metareward.config import load_config

    overrides = [f"storage.root={root}", f"engine.backend={backend}", "engine.batch_size=256",
                 "engine.gpu_memory_utilization=0.5", "eval.enabled=false"]
    if model_path:
        overrides.append(f"model.path={model_path}")
    if QUICK:
        overrides += ["prompts.per_iteration=4", "actor.sampling.max_new_tokens=8", "judge.sampling.max_new_tokens=4",
                      "dpo.max_steps=1"]
    cfg = load_config("smoke", overrides)
    t = 1
    timings = {}

    def timed(name, fn, *a):
        start = time.perf_counter()
        m = fn(cfg, t, *a) if name != "pairs" else fn(cfg, t, *a)
        timings[name] = {"seconds": round(time.perf_counter() - start, 2), "counts": m.counts,
                         **{k: v for k, v in m.stats.items() if k in ("generated_tokens", "tokens_per_s",
                                                                      "sec_per_step", "steps", "ref_logps")}}
        print(json.dumps({name: timings[name]}), flush=True)
        report["smoke"] = timings
        return m

    model = stages.base_model(cfg)
    p = timed("prompts", stages.prompts)
    g = timed("generate", stages.generate, model, p)
    j = timed("judge", stages.judge, model, g)
    mj = timed("meta_judge", stages.meta_judge, model, g, j)
    pr = timed("pairs", stages.pairs, g, j, mj)
    timed("train", stages.train, model, pr)


def load_test(model_path: str, backend: str, report: dict) -> None:
    """Throughput at a GPU-sized load: 1024 sequences (256 prompts x 4 samples), up to 256 new tokens."""
    from importlib import resources

    from metareward.config import EngineSection, ModelSection
    from metareward.engines import open_engine
    from metareward.engines.base import Sampling

    rows = resources.files("metareward.data").joinpath("smoke_prompts.jsonl").read_text().splitlines()
    base = [json.loads(r)["prompt"] for r in rows]
    n_prompts, max_new = (8, 8) if QUICK else (256, 256)
    prompts = [f"{base[i % len(base)]} (variant {i})" for i in range(n_prompts)]
    eng = open_engine(backend, model_path, engine_cfg=EngineSection(backend=backend, dtype="bfloat16",
                                                                    batch_size=512, gpu_memory_utilization=0.5),
                      model_cfg=ModelSection(), seed=0)
    s = Sampling(temperature=0.8, top_p=0.95, max_new_tokens=max_new)
    eng.generate(prompts[:8], 1, Sampling(temperature=0.8, top_p=0.95, max_new_tokens=8), seed=0)  # warm-up
    start = time.perf_counter()
    outs = eng.generate(prompts, 4, s, seed=0)
    secs = time.perf_counter() - start
    tokens = sum(c.n_tokens for row in outs for c in row)
    report["load"] = {"sequences": 4 * n_prompts, "max_new_tokens": max_new, "tokens": tokens, "seconds": round(secs, 2),
                      "tok_per_s": round(tokens / secs, 1), "backend": backend}
    print(json.dumps({"load": report["load"]}), flush=True)
    if backend == "transformers":  # the same load through HF generate, batched the same way: what users would run
        report["load"]["hf_generate"] = hf_generate(eng, prompts, 4, s, rows_per_batch=512)
        report["load"]["ratio"] = round(report["load"]["tok_per_s"] / report["load"]["hf_generate"]["tok_per_s"], 2)
        print(json.dumps({"load": report["load"]}), flush=True)
    eng.close()


def hf_generate(eng, prompts: list[str], n: int, s, rows_per_batch: int) -> dict:
    import torch
    from transformers import GenerationConfig

    cfg = GenerationConfig(do_sample=True, temperature=s.temperature, top_p=s.top_p, top_k=0,
                           max_new_tokens=s.max_new_tokens, num_return_sequences=n, eos_token_id=eng.stop_ids,
                           pad_token_id=eng.tokenizer.pad_token_id)
    ids = [eng._encode(eng.render(p)) for p in prompts]
    per = max(1, rows_per_batch // n)
    tokens, start = 0, time.perf_counter()
    with torch.inference_mode():
        for b in range(0, len(ids), per):
            input_ids, mask, _ = eng._left_pad(ids[b:b + per])
            torch.manual_seed(b)
            out = eng.model.generate(input_ids=input_ids, attention_mask=mask, generation_config=cfg)
            tokens += sum(eng._completion(r).n_tokens for r in out[:, input_ids.shape[1]:].tolist())
    secs = time.perf_counter() - start
    return {"tokens": tokens, "seconds": round(secs, 2), "tok_per_s": round(tokens / secs, 1)}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(ROOT / "bench"))
    ap.add_argument("--random-init", default=None)
    ap.add_argument("--backend", default="auto", choices=["auto", "vllm", "transformers"])
    ap.add_argument("--quick", action="store_true", help="a tiny load, to try the script out on a CPU")
    ap.add_argument("--sections", default="smoke,load", help="comma-separated: smoke, load")
    args = ap.parse_args()
    global QUICK
    QUICK = args.quick
    import torch

    report: dict = {"gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
                    "torch": torch.__version__, "python": platform.python_version()}
    for name in ("transformers", "trl", "vllm"):
        try:
            from importlib import metadata

            report[name] = metadata.version(name)
        except Exception:  # noqa: BLE001
            report[name] = None
    backend = backend_for(args.backend)
    report["backend"] = backend
    print(json.dumps(report), flush=True)
    out = Path(args.out, "gpu_check.json")
    with tempfile.TemporaryDirectory() as tmp:
        model_path = None
        if args.random_init:
            model_path = random_model(args.random_init, f"{tmp}/model")
            report["weights"] = "random (speed only)"
        start = time.perf_counter()
        for name, fn in (("smoke", lambda: smoke_stages(model_path, backend, f"{tmp}/runs", report)),
                         ("load", lambda: load_test(model_path or _embedded(), backend, report))):
            if name not in args.sections.split(","):
                continue
            try:
                fn()
            except Exception as e:  # noqa: BLE001  (report what failed, keep the other section's figures)
                import traceback

                traceback.print_exc()
                report[f"{name}_error"] = f"{type(e).__name__}: {e}"
            out.write_text(json.dumps(report, indent=2))
        report["total_s"] = round(time.perf_counter() - start, 1)
    out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    return 0 if not any(k.endswith("_error") for k in report) else 1


def _embedded() -> str:
    from metareward.engines.models import embedded_model_path

    return embedded_model_path()


if __name__ == "__main__":
    raise SystemExit(main())
