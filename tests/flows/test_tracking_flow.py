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
from tests.servers import free_port, wait_until

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


def test_the_fake_run_in_wandb_offline(tmp_path, prefect_harness, fake_trainer, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    (tmp_path / "wandb").mkdir()
    from flows.run import run_pipeline

    summaries = run_pipeline(_cfg(tmp_path / "store", "tracking.backend=wandb", "tracking.project=fake-runs"))
    runs = sorted((tmp_path / "wandb" / "wandb").glob("offline-run-*"))
    assert len(runs) == 2  # one offline run folder per iteration's logging, both the same W&B run id
    assert len({p.name.rsplit("-", 1)[-1] for p in runs}) == 1
    last = json.loads((runs[-1] / "files" / "wandb-summary.json").read_text())
    assert last["_step"] == 2 and last["actor_pairs"] == summaries[1]["actor_pairs"] and last["judge_pairs"] == 0
    assert (runs[0] / "files" / "summary.md").is_file()
    config = (runs[0] / "files" / "config.yaml").read_text()
    assert "dpo.beta" in config and "tracking.backend" in config
