"""The deployments launcher (execution.mode=deployments): a GPU stage as flow runs of the parametrised ``stage``
flow (flows/stages.py) on a work pool, the replicas of a sharded stage at once.

`contract.execute` calls it on the orchestrator once the stage's manifest is known to be missing; it saves the
run's config into the run store, starts ``R`` deployment runs of ``stage/<execution.stage_deployment>`` (one per
replica; 1 for a stage that is not sharded), waits on them together, and returns; the orchestrator then merges a
sharded stage's shards (or reads the manifest back). Only the run folder, the stage, the iteration, the replica
and the stage key cross into the container; data and models travel through the run store.

A run that Crashed (its container killed, out of memory) or Failed raises `StageRunFailed`, which the stage
task's retry condition retries: the retried runs find their finished shards committed and compute the rest.
"""

from __future__ import annotations

import time

from metareward.config import RunConfig
from metareward.pipeline import calls
from metareward.pipeline.contract import StageError
from metareward.registry import stage as spec
from metareward.runstore.layout import RunLayout

FLOW = "stage"  # flows/stages.py's flow; its deployments are stage/gpu, stage/docker-cpu, stage/local
POLL_S = 2.0


class StageRunFailed(RuntimeError):
    """A stage's deployment run Crashed or Failed. Worth another run (unlike a `StageError`): the shards it
    committed stay, so the next run computes only the rest."""


def replica_count(cfg: RunConfig, stage: str) -> int:
    """Deployment runs for the stage: ``engine.replicas`` of a sharded stage (0 = 1: the orchestrator cannot see
    the pool's GPUs), one of any other."""
    return max(cfg.engine.replicas, 1) if spec(stage).sharded else 1


def run_name(cfg: RunConfig, stage: str, t: int, replica: int, count: int) -> str:
    """``<run>-<stage>-iter<t>``, plus ``-r<replica>of<R>`` for one of several (the docker worker names and
    labels the container after it)."""
    base = f"{cfg.run.name}-{stage}-iter{t}"
    return base if count == 1 else f"{base}-r{replica}of{count}"


def parameters(cfg: RunConfig, stage: str, t: int, replica: int, count: int, key: str | None) -> dict:
    """A sharded stage's runs are replicas even when alone (replica 0 of 1: every shard, no manifest), since the
    orchestrator merges after; any other stage's run is the whole stage."""
    part = spec(stage).sharded
    return {"run": RunLayout.of(cfg).run, "stage": stage, "t": t,
            "replica": replica if part else None, "replicas": count, "key": key}


def run_deployments(cfg: RunConfig, stage: str, t: int, key: str | None = None) -> None:
    """`contract.Launcher`: the stage's deployment runs, started at once and waited on together."""
    from prefect.deployments import run_deployment

    calls.save_config(cfg)  # what every stage run reads: this call's config, exactly
    count = replica_count(cfg, stage)
    deployment = f"{FLOW}/{cfg.execution.stage_deployment}"
    runs = [run_deployment(deployment, parameters=parameters(cfg, stage, t, r, count, key), timeout=0,
                           flow_run_name=run_name(cfg, stage, t, r, count)) for r in range(count)]
    ended = wait_all([r.id for r in runs], cfg.execution.stage_timeout_s)
    check(stage, t, ended)


def wait_all(ids: list, timeout_s: float | None, poll_s: float = POLL_S) -> list:
    """The flow runs ``ids`` once every one is in a final state (read together, every ``poll_s`` seconds)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    with get_client(sync_client=True) as client:
        while True:
            runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=ids)))
            if len(runs) == len(ids) and all(r.state is not None and r.state.is_final() for r in runs):
                return runs
            if deadline is not None and time.monotonic() > deadline:
                going = [r.name for r in runs if r.state is None or not r.state.is_final()]
                raise StageError(f"still running after execution.stage_timeout_s={timeout_s}: {going}")
            time.sleep(poll_s)


def check(stage: str, t: int, runs: list) -> None:
    """Raise `StageRunFailed` naming every run that did not complete."""
    failed = [r for r in runs if not r.state.is_completed()]
    bad = [f"{r.name} {r.state.name}: {r.state.message}" for r in failed]
    if failed and all(_refused(r.state.message) for r in failed):  # the same settings would fail the same way
        raise StageError(f"{stage} iter {t}: " + " | ".join(bad))
    if bad:
        raise StageRunFailed(f"{stage} iter {t}: {len(bad)} of {len(runs)} deployment runs did not complete; "
                             "their committed shards are kept for the retry. " + " | ".join(bad))


def _refused(message: str | None) -> bool:
    """A run that failed with a `StageError` or a `ConfigError` (a stage key the container computes otherwise,
    bad settings): not worth a retry."""
    return any(f"{name}:" in (message or "") for name in ("StageError", "ConfigError"))
