"""A killed benchmark resumes to the same bytes on the CPU engine (the real SmolLM2-135M).

The answers stage commits its shards as they finish; a SIGKILL after the first shard, then the same stage again,
reuses the finished shards and writes an answers file byte-identical to an uninterrupted run's (in another store).
The benchmark stage killed after it has scored IFEval, and run again, writes the same MT-Bench answer and judgment
files, byte for byte, as it did before (the harnesses' rows carry the answers' time, not the clock's)."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from metareward.config import load_config
from metareward.pipeline import calls, stages
from metareward.runstore import store
from metareward.runstore.layout import RunLayout

SMALL = ["run.name=resume", "prompts.eval_count=2", "eval.max_new_tokens=12", "eval.ifeval.limit=3",
         "eval.ifeval.max_new_tokens=12", "eval.llmbar.limit=2", "eval.mt_bench.max_new_tokens=8",
         "eval.alpaca_eval.enabled=false", "engine.shard_size=1", "judge.sampling.max_new_tokens=8"]


def _run(root: Path):
    cfg = load_config("smoke", [f"storage.root={root}", *SMALL])
    calls.save_config(cfg)
    return cfg, stages.base_model(cfg), stages.prompts(cfg, 1)


def _start(cfg, stage: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "metareward", "stage", stage, RunLayout.of(cfg).run, "--iter", "0"]
    return subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _kill_when(proc: subprocess.Popen, ready, timeout_s: float = 600) -> None:
    deadline = time.monotonic() + timeout_s
    while not ready():
        assert proc.poll() is None, "the stage ended before it could be killed"
        assert time.monotonic() < deadline, "nothing to kill at"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _files(folder: Path, pattern: str) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.glob(pattern))}


@pytest.mark.slow
def test_killed_answers_and_benchmark_resume_to_the_same_bytes(tmp_path):
    cfg_a, m0, prompts_a = _run(tmp_path / "a")
    whole = stages.answers(cfg_a, 0, m0, prompts_a)
    assert whole.counts["answers"] == 2 + 3 + 3 + 2 * 2  # held-out, IFEval, MT-Bench turn 1, LLMBar both orders

    cfg, m0, prompts_m = _run(tmp_path / "b")
    shards = Path(RunLayout.of(cfg).shards(0, "answers"))
    _kill_when(_start(cfg, "answers"), lambda: any(shards.glob("*/*.jsonl")))
    committed = len(list(shards.glob("*/*.jsonl")))
    resumed = stages.answers(cfg, 0, m0, prompts_m)
    assert 1 <= resumed.stats["shards_reused"] == committed < resumed.stats["shards"]
    assert Path(resumed.files["answers"]).read_bytes() == Path(whole.files["answers"]).read_bytes()

    bench = stages.benchmark(cfg, 0, m0, prompts_m, resumed)
    folder = Path(bench.uri)
    before = _files(folder, "mt_bench/**/*.jsonl")
    assert len(before) == 3  # questions, model answers, judgments
    store.invalidate(bench.uri)  # as if the stage had died before its manifest
    scored = folder / "ifeval" / "eval_results_loose.jsonl"
    written = scored.stat().st_mtime_ns
    _kill_when(_start(cfg, "benchmark"), lambda: scored.stat().st_mtime_ns != written)  # IFEval scored, MT-Bench not
    again = stages.benchmark(cfg, 0, m0, prompts_m, resumed)
    assert _files(folder, "mt_bench/**/*.jsonl") == before
    assert Path(again.files["answers"]).read_bytes() == Path(bench.files["answers"]).read_bytes()
