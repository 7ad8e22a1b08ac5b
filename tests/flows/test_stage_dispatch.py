"""flows.stages.RemoteStage and the dispatch task's retry condition, without a server: a deployment run that Crashed
(its container killed) is retried in a fresh run; one that Failed (the stage's own code, after its own retries) is
not; the run is created under the stage's name, so the docker worker names and labels its container so."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from prefect.states import Completed, Crashed, Failed

from flows import stages as F
from metareward.pipeline import contract as stages
from metareward.config import load_config
from metareward.records import Manifest, ModelRef


@pytest.fixture
def calls(monkeypatch):
    """run_deployment replaced: records its arguments and ends in the state the test sets."""
    seen = {"state": Completed()}

    def run_deployment(name, parameters, flow_run_name, timeout, poll_interval):
        seen.update(name=name, parameters=parameters, flow_run_name=flow_run_name)
        return SimpleNamespace(name="brave-otter", state=seen["state"])

    import prefect.deployments

    monkeypatch.setattr(prefect.deployments, "run_deployment", run_deployment)
    monkeypatch.setattr(F.store, "read_manifest", lambda uri: seen.get("manifest"))
    return seen


def _call(cfg):
    model = ModelRef(uri="s3://b/m", digest="d0", iteration=0)
    prompts = Manifest(stage="prompts", iteration=1, run=cfg.run.name, key="k", uri="s3://b/p")
    return F.RemoteStage("generate", cfg)(cfg, 1, model, prompts)


def test_the_run_is_named_after_the_stage_and_its_manifest_returned(calls):
    cfg = load_config("smoke", ["run.name=r", "execution.stage_deployment=docker-cpu"])
    calls["manifest"] = Manifest(stage="generate", iteration=1, run="r", key="k1", uri="s3://b/g")
    assert _call(cfg) is calls["manifest"]
    assert calls["name"] == "stage-generate/docker-cpu" and calls["flow_run_name"] == "r-generate-iter1"
    assert calls["parameters"]["t"] == 1 and calls["parameters"]["model"]["digest"] == "d0"


def test_a_crashed_run_is_retried_and_a_failed_one_is_not(calls):
    cfg = load_config("smoke", ["run.name=r"])
    calls["state"] = Crashed(message="Container exited with status code 137")
    with pytest.raises(F.StageRunCrashed, match="generate iter 1: deployment run brave-otter crashed: .*137") as crash:
        _call(cfg)
    calls["state"] = Failed(message="boom")
    with pytest.raises(stages.StageError, match="ended Failed") as failure:
        _call(cfg)
    assert F.retry_crashed(None, None, Failed(data=crash.value))
    assert not F.retry_crashed(None, None, Failed(data=failure.value))
    assert not F.retry_crashed(None, None, Failed(data=ConnectionError("x")))  # the stage task inside retries that


def test_the_dispatch_task_retries_as_the_config_says_and_only_crashes():
    cfg = load_config("smoke", ["execution.retries=3", "execution.retry_delay_seconds=7"])
    task = F.dispatch_task("judge", cfg)
    assert task.retries == 3 and task.retry_delay_seconds == 7 and task.retry_condition_fn is F.retry_crashed
