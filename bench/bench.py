"""`make bench`: our speed against what users would otherwise run, measured side by side in one run.

Sections (each in its own process, so one cannot warm or slow the next):

- engine: generated tokens per second of each generating stage (actor, judge, meta-judge, with the paper's
  prompts and text-writing judges) for our TransformersEngine and for the naive loop Self-Rewarding
  re-implementations use: HF ``generate``, one prompt and one sample at a time, same model, dtype and sampling.
  The workload is the smoke recipe's requests: K responses per prompt, N judgments of every response, and for the
  meta-judge every pair of one response's N judgments in both orders. The naive loop runs on every k-th request of
  the same workload (it is ~20x slower); both rates are tokens generated / wall seconds.
- dpo: seconds per step of our train stage (`metareward.training.dpo.train_dpo`) against a bare TRL ``DPOTrainer`` with
  the same settings (bench/dpo_step_time.py).
- prefect: orchestration overhead per stage task: the iteration flow run with stage bodies that do no work, for 1
  and for 3 iterations; the difference divided by the extra task runs. Start-up (the ephemeral API) is reported
  apart.
- rerun: wall time of ``metareward run smoke`` over a finished run (every stage a cache hit), a fresh process;
  a first, untimed run finishes it for the current code.

    make bench                     # all sections; writes bench/results.json and prints a table
    .venv/bin/python bench/bench.py engine dpo

The machine and its load average go into the results: on a shared 2-core machine other processes skew numbers.
"""

from __future__ import annotations

import itertools
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results.json"
SECTIONS = ("engine", "dpo", "prefect", "rerun")

# The workload: the smoke prompts, the smoke recipe's K and N, the paper's sampling; judges write text.
N_PROMPTS, K, N_JUDGE = 16, 4, 3
ACTOR_TOKENS, JUDGE_TOKENS, META_TOKENS = 96, 64, 64
NAIVE_EVERY = {"generate": 8, "judge": 24, "meta_judge": 12}  # naive loop on every k-th request


def _recipe():
    """The smoke recipe: the bench measures what `make run` uses (its batch size, dtype and training precision,
    resolved for this machine by `metareward.engines.precision`: bf16 only where the CPU computes it natively)."""
    from metareward.config import load_config

    return load_config("smoke")


# ------------------------------------------------------------------------------------------------- engine


def _naive(engine, texts: list[str], sampling) -> tuple[int, float]:
    """HF generate on one chat prompt at a time, one sample per call: the loop our speed is compared with."""
    import torch
    from transformers import GenerationConfig

    cfg = GenerationConfig(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p, top_k=0,
                           max_new_tokens=sampling.max_new_tokens, eos_token_id=engine.stop_ids,
                           pad_token_id=engine.tokenizer.pad_token_id)
    tokens, start = 0, time.perf_counter()
    with torch.inference_mode():
        for i, text in enumerate(texts):
            torch.manual_seed(i)
            ids = torch.tensor([engine._encode(engine.render(text))], device=engine.device)
            out = engine.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), generation_config=cfg)
            tokens += engine._completion(out[0, ids.shape[1]:].tolist()).n_tokens
    return tokens, time.perf_counter() - start


def _ours(engine, texts: list[str], n: int, sampling) -> tuple[list[list], int, float]:
    start = time.perf_counter()
    outs = engine.generate(texts, n, sampling, seed=0)
    secs = time.perf_counter() - start
    return outs, sum(c.n_tokens for row in outs for c in row), secs


def bench_engine() -> dict:
    from importlib import resources

    from metareward.engines.base import Sampling
    from metareward.engines.transformers_engine import TransformersEngine
    from metareward.engines.models import embedded_model_path
    from metareward.method.prompts import render_judge, render_meta_judge

    rows = resources.files("metareward.data").joinpath("smoke_prompts.jsonl").read_text().splitlines()
    prompts = [json.loads(r)["prompt"] for r in rows[:N_PROMPTS]]
    from metareward.engines.precision import inference_dtype

    recipe = _recipe()
    batch, dtype = recipe.engine.batch_size, inference_dtype(recipe.engine.dtype, "cpu")
    engine = TransformersEngine(embedded_model_path(), dtype=dtype, batch_size=batch)
    out: dict = {"model": "SmolLM2-135M-Instruct (embedded)", "dtype": dtype, "batch_size": batch, "stages": {}}

    def stage(name: str, texts: list[str], n: int, max_new: int):
        s = Sampling(temperature=0.8, top_p=0.95, max_new_tokens=max_new)
        subset = [t for t in texts for _ in range(n)][:: NAIVE_EVERY[name]]
        # half the naive loop before ours and half after: this shared machine's speed drifts by up to ~25% over
        # minutes, and the ratio should not depend on which side of a drift each ran
        first_tokens, first_s = _naive(engine, subset[::2], s)
        outs, tokens, secs = _ours(engine, texts, n, s)
        second_tokens, second_s = _naive(engine, subset[1::2], s)
        naive_tokens, naive_s = first_tokens + second_tokens, first_s + second_s
        ours, naive = tokens / secs, naive_tokens / naive_s
        out["stages"][name] = {
            "requests": len(texts) * n, "max_new_tokens": max_new, "tokens": tokens, "seconds": round(secs, 2),
            "tok_per_s": round(ours, 1), "naive_requests": len(subset), "naive_tokens": naive_tokens,
            "naive_seconds": round(naive_s, 2), "naive_tok_per_s": round(naive, 1), "ratio": round(ours / naive, 1),
        }
        print(json.dumps({name: out["stages"][name]}), flush=True)
        return outs

    # The requests each stage of the smoke recipe makes: every response judged N times; the meta-judge on one
    # response per prompt, every pair of its N judgments in both orders (pairs.meta_judge_requests).
    responses = stage("generate", prompts, K, ACTOR_TOKENS)
    answers = [(p, c.text) for p, row in zip(prompts, responses) for c in row]
    judged = stage("judge", [render_judge(p, a) for p, a in answers], N_JUDGE, JUDGE_TOKENS)
    meta = []
    for (p, a), js in list(zip(answers, judged))[::K]:
        for i, j in itertools.combinations(range(N_JUDGE), 2):
            meta += [render_meta_judge(p, a, js[i].text, js[j].text), render_meta_judge(p, a, js[j].text, js[i].text)]
    stage("meta_judge", meta, 1, META_TOKENS)
    engine.close()
    return out


# --------------------------------------------------------------------------------------------------- dpo


def bench_dpo() -> dict:
    sys.path.insert(0, str(ROOT / "bench"))
    from dpo_step_time import run_case

    from metareward.engines.precision import train_bf16

    precision = "bf16" if train_bf16(_recipe().dpo.bf16, on_gpu=False) else "fp32"
    ours, bare = run_case(f"fn-{precision}"), run_case(f"direct-{precision}")
    autocast = "bf16 autocast" if precision == "bf16" else "fp32"
    return {"ours_sec_per_step": ours["sec_per_step"], "trl_sec_per_step": bare["sec_per_step"],
            "ratio": round(ours["sec_per_step"] / bare["sec_per_step"], 3), "steps": ours["steps"],
            "settings": f"16 pairs, batch 2, max_length 256, {autocast}, 1 epoch", "ours": ours, "trl": bare}


# ------------------------------------------------------------------------------------------------ prefect


# The files each stage writes (metareward/pipeline/stages.py, `write_rows`): the no-work run writes them empty.
NOOP_FILES = {"prompt_pool": ("pool",), "prompts": ("prompts", "eval"), "generate": ("responses",),
              "judge": ("judgments",), "meta_judge": ("verdicts",), "pairs": ("pairs",),
              "benchmark": ("answers", "judgments")}


def _noop_execute(stage, cfg, t, inputs, body):
    """The run-store contract without the work: a manifest written, nothing computed."""
    from datetime import datetime, timezone

    from metareward.pipeline import stages
    from metareward.runstore import store
    from metareward.records import Manifest

    folder = store.stage_uri(cfg.storage.root, cfg.run.name, t, stage)
    files = {"model": folder}
    for name in NOOP_FILES.get(stage, ()):  # empty, so what reads them after the stage (the report) finds them
        files[name] = store.join(folder, f"{name}.jsonl")
        store.write_jsonl(files[name], [])
    m = Manifest(stage=stage, iteration=t, run=cfg.run.name, key=stages.stage_key(stage, cfg, t, inputs), uri=folder,
                 files=files, digests={"eval": "-"}, inputs=inputs, config_digest=cfg.digest(), seed=cfg.run.seed,
                 duration_s=0.0, created=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    store.write_manifest(m)
    return m


def _flow_seconds(iterations: int, root: str) -> tuple[float, int]:
    from metareward.pipeline import stages
    from metareward.config import load_config

    stages.execute = _noop_execute
    from flows.meta_rewarding import meta_rewarding

    # The health gates read the judge's judgments and count the pairs: a stage that did no work has neither, and
    # gating it would measure a failure, not the orchestration.
    cfg = load_config("smoke", [f"run.iterations={iterations}", f"storage.root={root}", f"run.name=noop{iterations}",
                                "health.enabled=false"])
    start = time.perf_counter()
    meta_rewarding.with_options(result_storage=Path(root, ".prefect-results"))(cfg)
    secs = time.perf_counter() - start
    n_tasks = sum(1 for _ in Path(root).rglob("manifest.json"))
    return secs, n_tasks


def bench_prefect() -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        from flows.run import OFFLINE_ENV

        os.environ["PREFECT_HOME"] = tmp
        for key, value in OFFLINE_ENV.items():  # what `metareward run` sets (the ephemeral API's start-up timeout)
            os.environ.setdefault(key, value)
        from prefect import flow

        start = time.perf_counter()
        flow(lambda: None, name="warm-up")()  # starts the ephemeral API: a one-off cost per process
        startup = time.perf_counter() - start
        one, n1 = _flow_seconds(1, f"{tmp}/one")
        three, n3 = _flow_seconds(3, f"{tmp}/three")
    per_task = (three - one) / (n3 - n1)
    return {"startup_s": round(startup, 2), "one_iteration_s": round(one, 2), "tasks_one": n1,
            "three_iterations_s": round(three, 2), "tasks_three": n3, "overhead_per_stage_s": round(per_task, 3)}


# -------------------------------------------------------------------------------------------------- rerun


def bench_rerun() -> dict:
    run = ROOT / "runs" / "smoke"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [str(Path(sys.executable).with_name("metareward")), "run", "smoke"]
    # First make sure the run is finished for this code: a stage's key includes its code's digest, so after a
    # change the stored stages are stale and this run recomputes them (~5 min; seconds when nothing changed).
    if not (run / "iter_1" / "benchmark" / "manifest.json").is_file():
        print("rerun: runs/smoke has no finished iteration; running `metareward run smoke` first (~5 min)",
              flush=True)
    warm = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    if warm.returncode:
        raise RuntimeError(warm.stderr[-2000:])
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    secs = time.perf_counter() - start
    if proc.returncode:
        raise RuntimeError(proc.stderr[-2000:])
    ran = proc.stderr.count(": running")
    return {"seconds": round(secs, 2), "stages_recomputed": ran, "command": "metareward run smoke (fresh process)"}


# --------------------------------------------------------------------------------------------------- main


def machine() -> dict:
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count()
    flags = next((ln.split(":", 1)[1].split() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                  if ln.startswith("flags")), []) if Path("/proc/cpuinfo").exists() else []
    # The same model name has come on hosts with and without AVX512-BF16 here, and bf16 speed depends on it.
    simd = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in flags]
    return {"cpu": cpu, "cores": cores, "simd": simd, "python": platform.python_version(),
            "load_avg_1m": os.getloadavg()[0]}


def table(results: dict) -> str:
    m = results["machine"]
    lines = [f"machine: {m['cpu']}, {m['cores']} cores, {' '.join(m.get('simd', [])) or 'simd unknown'}", ""]
    e = results.get("engine")
    if e and "stages" in e:
        lines.append(f"engine dtype {e['dtype']}, batch {e['batch_size']}")
        lines += [f"{'stage':<12}{'ours tok/s':>12}{'naive tok/s':>13}{'ratio':>8}"]
        for name, s in e["stages"].items():
            lines.append(f"{name:<12}{s['tok_per_s']:>12}{s['naive_tok_per_s']:>13}{s['ratio']:>7}x")
        lines.append("")
    d = results.get("dpo")
    if d and "ratio" in d:
        lines.append(f"DPO s/step: ours {d['ours_sec_per_step']}, bare TRL {d['trl_sec_per_step']} "
                     f"(ratio {d['ratio']}; {d.get('settings', '')})")
    p = results.get("prefect")
    if p and "overhead_per_stage_s" in p:
        lines.append(f"Prefect overhead per stage: {p['overhead_per_stage_s']} s (ephemeral API start-up "
                     f"{p['startup_s']} s, once per process)")
    r = results.get("rerun")
    if r and "seconds" in r:
        lines.append(f"cached rerun of an iteration: {r['seconds']} s, {r['stages_recomputed']} stages recomputed")
    for name in SECTIONS:
        if isinstance(results.get(name), dict) and "error" in results[name]:
            lines.append(f"{name}: FAILED: {results[name]['error'][-300:]}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    if argv[:1] == ["--one"]:
        res = {"engine": bench_engine, "dpo": bench_dpo, "prefect": bench_prefect, "rerun": bench_rerun}[argv[1]]()
        print("RESULT " + json.dumps(res), flush=True)
        return 0
    wanted = argv or list(SECTIONS)
    results = json.loads(RESULTS.read_text()) if RESULTS.is_file() and argv else {}
    results["machine"] = machine()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
           "TOKENIZERS_PARALLELISM": "false", "DO_NOT_TRACK": "1"}
    failed = False
    for name in wanted:
        print(f"== {name}", flush=True)
        proc = subprocess.run([sys.executable, __file__, "--one", name], cwd=ROOT, env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode or not lines:
            results[name] = {"error": proc.stderr[-3000:]}
            failed = True
        else:
            results[name] = json.loads(lines[-1][len("RESULT "):])
        results[name]["load_avg_1m_after"] = os.getloadavg()[0]
    results["measured"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))
    print(f"written: {RESULTS.relative_to(ROOT)}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
