"""Tracking for real: the fake-engine run logs to an MLflow server this test starts (SQLite backend, 127.0.0.1) and
to W&B in offline mode; what the trackers hold is read back with their own clients, and a re-run adds nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from metareward.config import load_config
from metareward.runstore import store
from metareward.runstore.layout import RunLayout
from servers import free_port, wait_until  # tests/ is on sys.path (tests/conftest.py)

pytestmark = pytest.mark.slow


def _cfg(root, *extra):
    return load_config("smoke", [f"storage.root={root}", "engine.backend=fake", "execution.stage_process=inline",
                                 "run.name=tracked", "run.iterations=2", "pairs.judge_pairs=[true, false]", *extra])


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    """``mlflow server`` on a free port, its store a SQLite file and an artifact folder; yields its URI."""
    pytest.importorskip("mlflow")
    import httpx

    root, port = tmp_path_factory.mktemp("mlflow"), free_port()
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
                             f"sqlite:///{root}/mlflow.db", "--artifacts-destination", str(root / "artifacts"),
                             "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                            stdout=open(root / "server.log", "w"), stderr=subprocess.STDOUT)
    uri = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: proc.poll() is None and httpx.get(f"{uri}/health", timeout=5).status_code == 200,
                   "mlflow server", timeout=180)
        yield uri
    finally:
        proc.terminate()
        proc.wait(30)


def _history(client, run_id, key):
    return [(m.step, m.value) for m in sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)]


def test_the_fake_run_in_mlflow(tmp_path, prefect_harness, fake_trainer, mlflow_server, monkeypatch):
    from mlflow.tracking import MlflowClient

    from flows.run import run_pipeline

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    cfg = _cfg(tmp_path, "tracking.backend=mlflow", "tracking.experiment=fake-runs")
    summaries = run_pipeline(cfg)
    client = MlflowClient(mlflow_server)
    exp = client.get_experiment_by_name("fake-runs")
    [run] = client.search_runs([exp.experiment_id], filter_string="tags.`metareward.role` = 'run'")
    assert run.info.run_name == "tracked"
    # the config as parameters, the manifests' digests as tags
    assert run.data.params["dpo.beta"] == "0.1" and run.data.params["actor.k"] == "4"
    assert run.data.params["pairs.judge_pairs"] == "[true, false]" and run.data.params["tracking.backend"] == "mlflow"
    layout = RunLayout(str(tmp_path), "tracked")
    assert run.data.tags["iter1.pairs.digest"] == store.read_manifest(layout.stage(1, "pairs")).digest
    assert "iter2.meta_judge.digest" not in run.data.tags  # iteration 2 ran no meta-judge
    # per iteration, step = t: the summary's figures and the health gates
    assert _history(client, run.info.run_id, "actor_pairs") == [(1, summaries[0]["actor_pairs"]),
                                                               (2, summaries[1]["actor_pairs"])]
    assert _history(client, run.info.run_id, "judge_pairs") == [(1, 16.0), (2, 0.0)]
    assert _history(client, run.info.run_id, "judgments") == [(1, 192.0), (2, 192.0)]  # 16 prompts x K=4 x N=3
    assert [v for _, v in _history(client, run.info.run_id, "health.judge.passed")] == [1.0, 1.0]
    assert _history(client, run.info.run_id, "judge_parse_rate") == [(1, 1.0), (2, 1.0)]
    assert "benchmark.mt_bench.score" in run.data.metrics and "durations_s.train" in run.data.metrics
    # the judge-free measures as curves over the models: M_0 at step 0 (logged with iteration 1), M_t at step t
    for name in ("ifeval/prompt_level_strict_acc", "ifeval/prompt_level_strict_acc_lo", "llmbar/accuracy_hi"):
        assert [step for step, _ in _history(client, run.info.run_id, name)] == [0, 1, 2], name
    assert [step for step, _ in _history(client, run.info.run_id, "drift/self_preference_excess")] == [1, 2]
    assert not any(k.startswith("benchmark.ifeval") for k in run.data.metrics)  # once, under its own name
    # the summaries and the report as artifacts
    assert {f.path for f in client.list_artifacts(run.info.run_id, "iter1")} >= {
        "iter1/summary.md", "iter1/summary.json", "iter1/report.html"}
    # DPO's curves in a child run per iteration (the fake trainer's log: one step, loss 0.69)
    children = client.search_runs([exp.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{run.info.run_id}'")
    assert sorted(c.info.run_name for c in children) == ["tracked-dpo-iter1", "tracked-dpo-iter2"]
    assert all(_history(client, c.info.run_id, "loss") == [(1, 0.69)] for c in children)
    assert json.loads(Path(layout.tracked(1)).read_text())["run_id"] == run.info.run_id

    # a cached re-run logs nothing again
    run_pipeline(cfg)
    assert len(client.search_runs([exp.experiment_id])) == 3
    assert len(client.get_metric_history(run.info.run_id, "actor_pairs")) == 2


def wandb_records(run_folder: Path) -> list:
    """The records of an offline run's ``run-<id>.wandb`` file: W&B's log format (LevelDB's): a 7-byte file header,
    then 32 KiB blocks of chunks, each with a 7-byte header (CRC, length, type: 1 full, 2 first, 3 middle, 4 last)."""
    import struct

    from wandb.proto import wandb_internal_pb2 as pb

    [path] = run_folder.glob("*.wandb")
    data, pos, out, part = path.read_bytes(), 7, [], b""
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7]) if left >= 7 else (0, 0, 0)
        if left < 7 or (length, kind) == (0, 0):  # the block's zero padding
            pos += left
            continue
        part, pos = part + data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind in (1, 4):
            out.append(pb.Record.FromString(part))
            part = b""
    return out


def _items(items) -> dict:
    return {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in items}


def test_the_fake_run_in_wandb_offline(tmp_path, prefect_harness, fake_trainer, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    (tmp_path / "wandb").mkdir()
    from flows.run import run_pipeline

    summaries = run_pipeline(_cfg(tmp_path / "store", "tracking.backend=wandb", "tracking.project=fake-runs"))
    runs = sorted((tmp_path / "wandb" / "wandb").glob("offline-run-*"))
    assert len(runs) == 2  # one offline session per iteration's logging, both the same W&B run id
    assert len({p.name.rsplit("-", 1)[-1] for p in runs}) == 1
    history = [_items(r.history.item) for p in runs for r in wandb_records(p) if r.WhichOneof("record_type") == "history"]
    assert [h["_step"] for h in history] == [0, 1, 2]  # M_0's measures at step 0, before iteration 1's figures
    assert "ifeval/prompt_level_strict_acc" in history[0] and "actor_pairs" not in history[0]
    assert [(h["_step"], h["actor_pairs"], h["judge_pairs"]) for h in history[1:]] == [
        (1, summaries[0]["actor_pairs"], 16), (2, summaries[1]["actor_pairs"], 0)]
    assert history[1]["judgments"] == 192 and history[1]["health.judge.passed"] == 1.0
    assert "drift/gap" in history[1] and "llmbar/accuracy" in history[2]
    config = {k for r in wandb_records(runs[0]) if r.WhichOneof("record_type") == "run" for k in _items(r.run.config.update)}
    assert {"dpo.beta", "tracking.backend"} <= config
    assert (runs[0] / "files" / "summary.md").is_file() and (runs[0] / "files" / "report.html").is_file()

    # a cached re-run opens no new W&B session
    run_pipeline(_cfg(tmp_path / "store", "tracking.backend=wandb", "tracking.project=fake-runs"))
    assert len(list((tmp_path / "wandb" / "wandb").glob("offline-run-*"))) == 2
