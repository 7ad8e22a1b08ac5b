"""tasks.launch, the deployments launcher, without a server: R deployment runs of the one stage flow, started at
once (timeout=0) and waited on together, named per replica, with the run folder, stage, iteration, replica and
key as parameters; a Crashed or Failed run raises what the stage task retries (not a StageError)."""

from __future__ import annotations

from types import SimpleNamespace
from uuid import uuid4

import pytest
from prefect.states import Completed, Crashed, Failed

from metareward.config import load_config
from metareward.pipeline import contract
from tasks import launch
from tasks.stages import retry_worthwhile


@pytest.fixture
def runs(monkeypatch, tmp_path):
    """run_deployment and the wait replaced: records every start; the runs end in the states the test sets."""
    seen = {"started": [], "states": {}, "waited": []}

    def run_deployment(name, parameters, flow_run_name, timeout):
        assert timeout == 0  # started, not waited on one by one
        run = SimpleNamespace(id=uuid4(), name=flow_run_name, deployment=name, parameters=parameters)
        seen["started"].append(run)
        return run

    def wait_all(ids, timeout_s):
        seen["waited"].append((list(ids), timeout_s))
        by_id = {r.id: r for r in seen["started"]}
        return [SimpleNamespace(name=by_id[i].name, state=seen["states"].get(by_id[i].name, Completed()))
                for i in ids]

    import prefect.deployments

    monkeypatch.setattr(prefect.deployments, "run_deployment", run_deployment)
    monkeypatch.setattr(launch, "wait_all", wait_all)
    seen["root"] = str(tmp_path)
    return seen


def _cfg(runs, *extra):
    return load_config("smoke", ["run.name=r", f"storage.root={runs['root']}", *extra])


def test_a_sharded_stage_starts_its_replicas_at_once_and_waits_on_them_together(runs):
    cfg = _cfg(runs, "engine.replicas=2", "execution.stage_deployment=docker-cpu", "execution.stage_timeout_s=99")
    launch.run_deployments(cfg, "judge", 1, "k1")
    assert [r.name for r in runs["started"]] == ["r-judge-iter1-r0of2", "r-judge-iter1-r1of2"]
    assert {r.deployment for r in runs["started"]} == {"stage/docker-cpu"}
    assert [r.parameters for r in runs["started"]] == [
        {"run": f"{runs['root']}/r", "stage": "judge", "t": 1, "replica": i, "replicas": 2, "key": "k1"}
        for i in (0, 1)]
    assert runs["waited"] == [([r.id for r in runs["started"]], 99)]  # one wait for both
    assert launch.calls.stored_config(f"{runs['root']}/r") == cfg  # saved where every stage run reads it


def test_a_stage_that_is_not_sharded_is_one_run_and_replicas_0_is_one(runs):
    launch.run_deployments(_cfg(runs, "engine.replicas=3"), "train", 1, None)
    launch.run_deployments(_cfg(runs), "generate", 1, None)  # engine.replicas=0: one run on a pool
    assert [(r.name, r.parameters["replica"], r.parameters["replicas"]) for r in runs["started"]] == [
        ("r-train-iter1", None, 1), ("r-generate-iter1", 0, 1)]  # a sharded stage's lone run: replica 0 of 1
    assert runs["started"][0].deployment == "stage/gpu"


def test_a_crashed_or_failed_run_raises_what_the_task_retries(runs):
    cfg = _cfg(runs, "engine.replicas=2")
    runs["states"]["r-judge-iter1-r1of2"] = Crashed(message="Container exited with status code 137")
    with pytest.raises(launch.StageRunFailed, match="1 of 2 .* r-judge-iter1-r1of2 Crashed: .*137") as crash:
        launch.run_deployments(cfg, "judge", 1, None)
    runs["states"]["r-judge-iter1-r1of2"] = Failed(message="boom")
    with pytest.raises(launch.StageRunFailed, match="Failed: boom") as failure:
        launch.run_deployments(cfg, "judge", 1, None)
    assert not isinstance(crash.value, contract.StageError)
    assert retry_worthwhile(None, None, Failed(data=crash.value))
    assert retry_worthwhile(None, None, Failed(data=failure.value))


def test_deployments_mode_launches_through_the_pool(monkeypatch):
    import contextlib

    from tasks import stages as stage_tasks

    seen = []
    monkeypatch.setattr(contract, "launching", lambda launcher: seen.append(launcher) or contextlib.nullcontext())
    for mode in ("deployments", "local"):
        with stage_tasks.placed(load_config("smoke", [f"execution.mode={mode}"])):
            pass
    assert seen[0] is launch.run_deployments and seen[1] is not launch.run_deployments


def test_a_run_refused_by_the_stage_is_not_retried(runs):
    cfg = _cfg(runs)
    runs["states"]["r-train-iter1"] = Failed(message="Flow run encountered an exception: StageError: the stage key")
    with pytest.raises(contract.StageError, match="r-train-iter1 Failed"):
        launch.run_deployments(cfg, "train", 1, None)


def test_every_task_of_a_run_takes_the_runs_retry_policy():
    """Retries are set in one place (`RunTasks`), from ``execution.*``, on every task the flows call."""
    from metareward.config import load_config
    from tasks import stages as stage_tasks

    cfg = load_config("smoke", ["execution.retries=4", "execution.retry_delay_seconds=1.5"])
    tasks = stage_tasks.RunTasks(cfg)
    for name in (*stage_tasks.STAGES, "base_model"):
        task = getattr(tasks, name)
        assert (task.retries, task.retry_delay_seconds, task.retry_condition_fn) == (
            4, 1.5, stage_tasks.retry_worthwhile), name
        assert getattr(stage_tasks, name).retries == 0  # the bare task declares none of its own
    with pytest.raises(AttributeError):
        tasks.placed
