"""Generation throughput of TransformersEngine on the embedded SmolLM2-135M-Instruct.

16 prompts from the shipped smoke set, n=4 samples each (temperature 0.8, top_p 0.95), max_new_tokens=64, for
each batch_size x dtype. ``batch_size`` counts sequences (rows), so 16 prompts x 4 samples are 4, 2 or 1 batches
at 16, 32, 64. Each case runs in its own process (model load not timed)::

    HF_HUB_OFFLINE=1 .venv/bin/python bench/engine_throughput.py [bs:dtype ...]   # default: all six

Prints one JSON line per case: generated tokens (up to end of turn) per second of generate() wall time. The load
average is printed too: on a shared 2-core machine other processes skew the numbers.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASES = tuple(f"{bs}:{dt}" for dt in ("float32", "bfloat16") for bs in (16, 32, 64))
N_PROMPTS, N, MAX_NEW = 16, 4, 64


def run_case(case: str) -> dict:
    from importlib import resources

    from metareward.engines.base import Sampling
    from metareward.engines.transformers_engine import TransformersEngine
    from metareward.engines.models import embedded_model_path

    bs, dtype = case.split(":")
    rows = resources.files("metareward.data").joinpath("smoke_prompts.jsonl").read_text().splitlines()
    prompts = [json.loads(r)["prompt"] for r in rows[:N_PROMPTS]]
    eng = TransformersEngine(embedded_model_path(), dtype=dtype, batch_size=int(bs))
    load0 = os.getloadavg()[0]
    t = time.perf_counter()
    out = eng.generate(prompts, N, Sampling(temperature=0.8, top_p=0.95, max_new_tokens=MAX_NEW), seed=0)
    wall = time.perf_counter() - t
    toks = sum(c.n_tokens for row in out for c in row)
    stops = sum(c.finish_reason == "stop" for row in out for c in row)
    import torch

    return {"batch_size": int(bs), "dtype": dtype, "threads": torch.get_num_threads(), "tokens": toks,
            "stopped": stops, "seconds": round(wall, 1), "tok_per_s": round(toks / wall, 1),
            "load_avg_1m": [round(load0, 2), round(os.getloadavg()[0], 2)]}


def main(argv: list[str]) -> None:
    if argv[:1] == ["--one"]:
        print(json.dumps(run_case(argv[1])), flush=True)
        return
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    for case in argv or CASES:
        res = subprocess.run([sys.executable, __file__, "--one", case], env=env, cwd=ROOT,
                             capture_output=True, text=True)
        line = res.stdout.strip().splitlines()[-1] if res.stdout.strip() else res.stderr[-2000:]
        print(line, flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
