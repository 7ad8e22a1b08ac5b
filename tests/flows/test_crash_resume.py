"""Crash safety: SIGKILL a real `metareward` process at 10 seeded random moments, `resume` each time.

The pipeline (2 iterations, fake engine, stand-in DPO: tests/flows/crash_driver.py) runs in a subprocess
against this session's Prefect test server. After every kill the store must hold no partial file under a final
name and every manifest must match its files; at the end no stage or shard may have been computed twice, some
shards of an interrupted stage must have been reused, and every stage's output must equal (same key, same file
digests) that of an uninterrupted run.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from metareward.runstore import store
from metareward.records import Manifest

DRIVER = Path(__file__).with_name("crash_driver.py")
KILLS = 10


def _overrides(root: Path, seed_model: Path) -> list[str]:
    return ["engine.backend=fake", "execution.stage_process=inline", f"model.path={seed_model}", "run.name=crash", "run.iterations=2",
            f"storage.root={root}", "engine.shard_size=8", "pairs.judge_pairs=[true, false]", "execution.retries=0",
            "eval.mt_bench.enabled=false", "eval.alpaca_eval.enabled=false", "eval.ifeval.limit=4", "eval.llmbar.limit=2"]


def _start(args: list[str], env: dict, work: Path) -> subprocess.Popen:
    (work / "ready").unlink(missing_ok=True)
    return subprocess.Popen([sys.executable, str(DRIVER), *args], env=env, cwd=work,
                            stdout=open(work / "stdout.txt", "ab"), stderr=open(work / "stderr.txt", "ab"))


def _env(work: Path, api_url: str) -> dict:
    return {**os.environ, "PREFECT_API_URL": api_url, "PREFECT_HOME": str(work / "prefect-home"),
            "CRASH_LOG": str(work / "events.log"), "CRASH_READY": str(work / "ready"), "CRASH_DELAY": "0.25",
            "DO_NOT_TRACK": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}


def _manifests(run: Path) -> dict[str, Manifest]:
    return {str(p.parent.relative_to(run)): store.read_manifest(str(p.parent)) for p in run.rglob("manifest.json")}


def _check_store(run: Path) -> None:
    """No file under a final name is partial; every manifest's files exist with the digests it records."""
    for p in run.rglob("*"):
        if not p.is_file() or p.name.startswith(".tmp-") or ".prefect-results" in p.parts:
            continue
        if p.suffix == ".jsonl":
            for line in p.read_text().splitlines():
                json.loads(line)
        elif p.suffix == ".json":
            json.loads(p.read_text())
    for where, m in _manifests(run).items():
        for name, digest in m.digests.items():
            uri = m.files[name]
            got = store.folder_digest(uri) if Path(uri).is_dir() else store.file_digest(uri)
            assert got == digest, f"{where}: {name} does not match its manifest"


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume(tmp_path, prefect_harness):
    from prefect.settings import PREFECT_API_URL

    seed_model = tmp_path / "seed-model"
    seed_model.mkdir()
    (seed_model / "config.json").write_text('{"model_type": "fake"}')
    api = PREFECT_API_URL.value()

    # the reference: one uninterrupted run
    ref_work = tmp_path / "ref"
    ref_work.mkdir()
    p = _start(["run", "smoke", *_overrides(ref_work / "store", seed_model)], _env(ref_work, api), ref_work)
    assert p.wait(timeout=300) == 0, (ref_work / "stderr.txt").read_text()[-3000:]
    ref_run = ref_work / "store" / "crash"

    work = tmp_path / "crashy"
    work.mkdir()
    env, rng = _env(work, api), random.Random(1234)
    run = work / "store" / "crash"
    args = ["run", "smoke", *_overrides(work / "store", seed_model)]
    for i in range(KILLS):
        p = _start(args, env, work)
        deadline = time.monotonic() + 120
        while not (work / "ready").exists():  # a stage began computing (finished stages are skipped first)
            assert p.poll() is None, f"attempt {i} ended before work began: {(work / 'stderr.txt').read_text()[-3000:]}"
            assert time.monotonic() < deadline
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 1.5))
        os.kill(p.pid, signal.SIGKILL)
        assert p.wait(timeout=30) == -signal.SIGKILL, f"attempt {i} finished before its kill"
        _check_store(run)
        args = ["resume", "crash", "--root", str(work / "store")]
    p = _start(args, env, work)
    assert p.wait(timeout=300) == 0, (work / "stderr.txt").read_text()[-3000:]
    _check_store(run)

    events = [e for e in (work / "events.log").read_text().splitlines() if not e.startswith("start ")]
    twice = [e for e, n in Counter(events).items() if n > 1]
    assert not twice, f"computed more than once: {twice}"
    ref, got = _manifests(ref_run), _manifests(run)
    assert sorted(got) == sorted(ref)
    for where in ref:
        assert (got[where].key, got[where].digests, got[where].counts) == \
               (ref[where].key, ref[where].digests, ref[where].counts), where
    assert sum(m.stats.get("shards_reused", 0) for m in got.values()) > 0  # some kill landed inside a stage
    assert not list(run.rglob("shards"))  # scratch space of finished stages is gone
