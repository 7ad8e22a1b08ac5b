"""Fan-out on this machine: a sharded stage's replicas as processes of their own (metareward/pipeline/fanout.py),
each computing its shards, then one merge. The rows must not depend on the replica count, and a replica killed
mid-stage must cost only its unfinished shards."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from metareward.config import load_config
from metareward.pipeline import calls, contract, fanout
from metareward.runstore import store
from metareward.runstore.layout import RunLayout

STAGES = ("prompts", "generate", "judge", "meta_judge", "pairs")
FILES = {"generate": "responses", "judge": "judgments", "meta_judge": "verdicts", "pairs": "pairs"}
SLOW = Path(__file__).with_name("slow_stage.py")


def _cfg(root: Path, name: str, *extra: str):
    return load_config("smoke", [f"storage.root={root}", "engine.backend=fake", f"run.name={name}",
                                 "engine.shard_size=4", *extra])


def _run(cfg, launcher=fanout.run_processes) -> None:
    """Iteration 1 up to the pairs, then M_0's benchmark answers, the GPU stages as local mode runs them: in
    processes of their own."""
    calls.save_config(cfg)
    with contract.launching(launcher):
        for stage in STAGES:
            calls.run(cfg, stage, 1)
        calls.run(cfg, "answers", 0)


def _rows(cfg) -> dict[str, bytes]:
    run = Path(RunLayout.of(cfg).run)
    rows = {s: (run / "iter_1" / s / f"{f}.jsonl").read_bytes() for s, f in FILES.items()}
    return {**rows, "answers": (run / "iter_0" / "answers" / "answers.jsonl").read_bytes()}


def test_two_replicas_give_the_rows_of_one_byte_for_byte(tmp_path):
    """16 prompts in shards of 4: replica 0 computes shards 0 and 2, replica 1 shards 1 and 3 of each stage."""
    ref = _cfg(tmp_path, "inline")
    _run(ref, launcher=None)
    one, two = _cfg(tmp_path, "one", "engine.replicas=1"), _cfg(tmp_path, "two", "engine.replicas=2")
    _run(one)
    _run(two)
    assert _rows(one) == _rows(ref) and _rows(two) == _rows(ref)
    m = store.read_manifest(RunLayout(str(tmp_path), "two").stage(1, "judge"))
    assert m.stats["shards"] == 16 and m.stats["shards_reused"] == 16  # 64 responses in shards of 4, all merged


def test_a_killed_replica_loses_only_its_unfinished_shards(tmp_path, caplog):
    """8 shards of 2 prompts; replica 1 of 2 owns shards 1, 3, 5, 7. It is SIGKILLed after committing some of
    them; the rerun's replica 1 computes only the rest, replica 0 all of its own, and the rows equal a run that
    was never interrupted."""
    cfg = _cfg(tmp_path, "kill", "engine.replicas=2", "engine.shard_size=2")
    calls.save_config(cfg)
    calls.run(cfg, "prompts", 1)
    run = RunLayout(str(tmp_path), "kill").run
    proc = subprocess.Popen([sys.executable, str(SLOW), "stage", "generate", run, "--iter", "1", "--replica", "1",
                             "--replicas", "2"], env={**os.environ, "SLOW_STAGE_DELAY": "1.5"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    shard_root = Path(run, "iter_1", "generate", "shards")
    deadline = time.monotonic() + 120
    while not list(shard_root.glob("*/00001.jsonl")) and time.monotonic() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    kept = sorted(int(p.stem) for p in shard_root.glob("*/0*.jsonl"))
    assert kept and set(kept) < {1, 3, 5, 7}, kept  # killed part-way: some of its shards, not all

    with caplog.at_level(logging.INFO, logger="metareward"):
        _generate_fanned_out(cfg)
    computed = {r: sorted(int(m.split("shard ")[1].split()[0]) for m in caplog.messages
                          if f"replica {r}]" in m and " committed (" in m) for r in (0, 1)}
    assert computed == {0: [0, 2, 4, 6], 1: sorted({1, 3, 5, 7} - set(kept))}

    ref = _cfg(tmp_path, "ref", "engine.shard_size=2")
    calls.save_config(ref)
    calls.run(ref, "prompts", 1)
    calls.run(ref, "generate", 1)
    folder = Path(run, "iter_1", "generate")
    assert (folder / "responses.jsonl").read_bytes() == Path(RunLayout(str(tmp_path), "ref").stage(1, "generate"),
                                                             "responses.jsonl").read_bytes()


def _generate_fanned_out(cfg) -> None:
    with contract.launching(fanout.run_processes):
        calls.run(cfg, "generate", 1)


def test_replicas_that_refuse_the_call_fail_the_stage_with_their_message(tmp_path, monkeypatch):
    """A stage process that exits 2 (here: its stage key is not the caller's) is a StageError, not worth a retry."""
    cfg = _cfg(tmp_path, "bad", "engine.replicas=2")
    calls.save_config(cfg)
    calls.run(cfg, "prompts", 1)
    real = fanout.command
    monkeypatch.setattr(fanout, "command", lambda run, stage, t, part, key: real(run, stage, t, part, "0" * 16))
    with pytest.raises(contract.StageError, match=r"2 of 2 stage processes failed.*replica 0 exited 2 \(.*"
                                                  r"this process computes the stage key"):
        _generate_fanned_out(cfg)


def test_a_replica_killed_by_a_signal_is_worth_a_retry(tmp_path, monkeypatch):
    cfg = _cfg(tmp_path, "sig", "engine.replicas=2")
    calls.save_config(cfg)
    calls.run(cfg, "prompts", 1)
    monkeypatch.setattr(fanout, "command", lambda *a: [sys.executable, "-c", "import os; os.kill(os.getpid(), 9)"])
    with pytest.raises(fanout.StageProcessFailed, match="exited -9"):
        _generate_fanned_out(cfg)


@pytest.mark.slow
def test_the_real_model_gives_the_same_rows_on_one_process_of_two_threads_and_two_of_one(tmp_path, monkeypatch):
    """The embedded SmolLM2 on the transformers engine (sizes cut to fit CI): one replica with two threads (its two
    batches decoding at once) and two replicas of one thread each give byte-identical responses, judgments,
    verdicts, pairs and benchmark answers (IFEval, MT-Bench, AlpacaEval, LLMBar's choice requests)."""
    small = ["engine.backend=transformers", "prompts.per_iteration=4", "actor.k=2", "judge.n=3",
             "actor.sampling.max_new_tokens=24", "judge.sampling.max_new_tokens=12", "engine.shard_size=2",
             "engine.batch_size=4", "prompts.eval_count=2", "eval.max_new_tokens=12", "eval.ifeval.limit=3",
             "eval.ifeval.max_new_tokens=12", "eval.mt_bench.max_new_tokens=8", "eval.alpaca_eval.max_new_tokens=8",
             "eval.llmbar.limit=2"]
    one, two = _cfg(tmp_path, "one", "engine.replicas=1", *small), _cfg(tmp_path, "two", "engine.replicas=2", *small)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    _run(one)
    _run(two)
    assert _rows(two) == _rows(one)
    assert store.read_manifest(RunLayout(str(tmp_path), "two").stage(1, "meta_judge")).counts["calls"] > 0
