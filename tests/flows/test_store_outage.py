"""Bounded store calls from the `metareward` command: an S3 endpoint that never answers or a closed port ends the
run with one line naming the URI within storage.outage_s; faults between the run and a real S3 API (moto, through
`servers.FaultProxy`) during stages are ridden out; a long outage ends with one line and `resume` continues
without recomputing a finished stage. The secret key is in no output, stored object or Prefect log."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from servers import FaultProxy, SilentServer, free_port

REPO = Path(__file__).resolve().parents[2]
DRIVER = Path(__file__).with_name("crash_driver.py")
START_MARGIN_S = 40  # starting Python and importing the command, on a busy 2-core host


def _seed(tmp: Path) -> Path:
    seed = tmp / "seed-model"
    seed.mkdir()
    (seed / "config.json").write_text('{"model_type": "fake"}')
    return seed


def _env(tmp: Path, endpoint: str, secret: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update({"AWS_ACCESS_KEY_ID": "metareward-test", "AWS_SECRET_ACCESS_KEY": secret, "AWS_ENDPOINT_URL": endpoint,
                "PREFECT_HOME": str(tmp / "prefect-home"), "PYTHONPATH": str(REPO), "METAREWARD_CACHE": str(tmp / "cache")})
    for k in ("METAREWARD_STORE_TIMEOUT_S", "METAREWARD_STORE_OUTAGE_S"):
        env.pop(k, None)
    return env


@pytest.mark.parametrize("endpoint", ["silent", "closed"])
def test_a_dead_endpoint_ends_the_run_with_one_line_within_the_bound(endpoint, tmp_path):
    server = SilentServer() if endpoint == "silent" else None
    url = server.url if server else f"http://127.0.0.1:{free_port()}"
    secret = "s3cr3t-never-shown-0123456789"
    args = [sys.executable, "-m", "flows", "run", "smoke", "storage.root=s3://dead-bucket/runs", "run.name=dead",
            "storage.timeout_s=1", "storage.outage_s=5", "engine.backend=fake", f"model.path={_seed(tmp_path)}",
            "execution.stage_process=inline"]
    began = time.monotonic()
    out = subprocess.run(args, cwd=tmp_path, env=_env(tmp_path, url, secret), capture_output=True, text=True,
                         timeout=300)
    wall = time.monotonic() - began
    if server:
        server.close()
    err = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(err) == 1, out.stderr[-3000:]
    assert err[0].startswith("error: s3://dead-bucket/runs/dead/config.json: write failed for "), err[0]
    assert f"check that the endpoint {url} answers" in err[0]
    assert int(re.search(r"failed for (\d+) s", err[0]).group(1)) <= 5
    assert wall < 5 + START_MARGIN_S, wall
    assert secret not in out.stdout + out.stderr
    if server:  # one attempt at a time, each one request: not dozens of connections held
        assert 1 <= server.accepted <= 10, server.accepted


def _overrides(root: str, seed: Path) -> list[str]:
    return ["engine.backend=fake", "execution.stage_process=inline", f"model.path={seed}", "run.name=faulty",
            "run.iterations=2", f"storage.root={root}", "engine.shard_size=8", "execution.retries=0",
            "eval.mt_bench.enabled=false", "eval.alpaca_eval.enabled=false", "storage.timeout_s=1",
            "storage.outage_s=6"]


def _wait(proc: subprocess.Popen, events: Path, seen: int, timeout: float = 240) -> list[str]:
    """The stage events logged after the first ``seen``, once there is one (or the run ended)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        lines = events.read_text().splitlines() if events.exists() else []
        if len(lines) > seen or proc.poll() is not None:
            return lines[seen:]
        time.sleep(0.05)
    raise TimeoutError("no stage finished")


def _run(args: list[str], env: dict, work: Path, proxy: FaultProxy, faults: dict[str, str], outage_at: str | None):
    """The command, switching the proxy to ``faults[stage event]`` for 1.5 s after that stage's manifest, and to a
    refusal for good after ``outage_at``; returns the process (ended) and its stderr."""
    stderr = work / f"stderr-{args[0]}.txt"
    proc = subprocess.Popen([sys.executable, str(DRIVER), *args, "--no-progress"], env=env, cwd=work,
                            stdout=open(work / "stdout.txt", "ab"), stderr=open(stderr, "wb"))
    events, seen = work / "events.log", len((work / "events.log").read_text().splitlines()) \
        if (work / "events.log").exists() else 0
    while proc.poll() is None:
        new = _wait(proc, events, seen)
        seen += len(new)
        for e in (e for e in new if e.startswith("stage ")):
            if e == outage_at:
                proxy.set("refuse")
            elif e in faults and proxy.mode == "pass":
                proxy.set(faults[e])
                time.sleep(1.5)  # longer than storage.timeout_s: a stalled request times out, then is retried
                proxy.set("pass")
    proc.wait(timeout=120)
    return proc, stderr.read_text()


@pytest.mark.slow
def test_faults_are_ridden_out_and_a_long_outage_resumes(tmp_path, s3_server, s3_bucket, prefect_harness):
    import fsspec
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL

    proxy = FaultProxy(int(s3_server["endpoint"].rsplit(":", 1)[1]))
    env = {**_env(tmp_path, proxy.url, s3_server["secret"]), "PREFECT_API_URL": PREFECT_API_URL.value(),
           "CRASH_LOG": str(tmp_path / "events.log"), "CRASH_READY": str(tmp_path / "ready"), "CRASH_DELAY": "0.05"}
    root = f"{s3_bucket}/runs"
    faults = {"stage prompts 1": "reset", "stage generate 1": "stall", "stage judge 1": "drop",
              "stage meta_judge 1": "refuse", "stage pairs 1": "stall", "stage train 1": "reset"}
    proc, err = _run(["run", "smoke", *_overrides(root, _seed(tmp_path))], env, tmp_path, proxy, faults,
                     outage_at="stage generate 2")
    lines = err.strip().splitlines()
    assert proc.returncode == 2, err[-3000:]
    assert re.match(rf"error: {re.escape(root)}/faulty/iter_2/\S+: \w+ (failed for \d+ s|: no answer after)",
                    lines[-1]), lines[-1]
    assert sum(line.startswith("error:") for line in lines) == 1 and "Traceback" not in err, err[-3000:]
    assert proxy.faults > 0

    fs = fsspec.filesystem("s3", skip_instance_cache=True)  # straight to moto, not through the proxy
    run = f"{root}/faulty"
    done = {p: fs.cat(p) for p in fs.find(run) if p.endswith("/manifest.json")}
    assert any("/iter_1/train/" in p for p in done) and any("/iter_2/generate/" in p for p in done)

    proxy.set("pass")
    proc, err = _run(["resume", "faulty", "--root", root], env, tmp_path, proxy, {}, outage_at=None)
    assert proc.returncode == 0, err[-3000:]
    events = [e for e in (tmp_path / "events.log").read_text().splitlines() if e.startswith("stage ")]
    assert not [e for e, n in Counter(events).items() if n > 1], events  # no finished stage computed again
    fs.invalidate_cache()
    assert {p: fs.cat(p) for p in done} == done  # their manifests untouched
    assert fs.exists(f"{run}/iter_2/benchmark/manifest.json")

    secret = s3_server["secret"]
    fs.invalidate_cache()  # the listing read before the resume is stale
    assert secret not in (tmp_path / "stdout.txt").read_text() + err
    assert not [p for p in fs.find(s3_bucket) if secret.encode() in fs.cat(p)]
    messages = []
    with get_client(sync_client=True) as client:
        while batch := client.read_logs(limit=200, offset=len(messages)):
            messages += [log.message for log in batch]
    assert any(f"{run}/" in m for m in messages)  # the runs' logs are there (metareward's included)
    assert not [m for m in messages if secret in m]
