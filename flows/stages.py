"""Stage flows: each GPU stage as a flow of its own, which GPU-pool deployments expose (execution.mode=deployments).

The orchestrating flow (flows/meta_rewarding.py, on a CPU pool) reaches a stage with ``run_deployment``; the
worker starts the stage flow in a fresh process, so vLLM's memory is free again before training. Only the
config and small manifests (URIs and digests) cross the boundary; model weights and data travel through the
run store (``s3://`` in production), and the orchestrator reads the stage's manifest back from there.

    prefect deploy --all --prefect-file deployments/prefect.yaml       # stage-generate/gpu, stage-judge/gpu, ...
    metareward run smoke storage.root=s3://bucket/runs execution.mode=deployments

Inside, a stage flow runs the same task as the local mode (tasks/stages.py), with the same cache key and the
result storage on the run store, so a re-run anywhere is a Prefect cache hit.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import logging
from pathlib import Path

from prefect import flow

from metareward.runstore import remote, store
from metareward.pipeline import stages
from metareward.config import RunConfig
from metareward.records import Manifest, ModelRef
from tasks import stages as T

RESULTS = ".prefect-results"

log = logging.getLogger(__name__)


def result_storage(cfg: RunConfig):
    """Where Prefect keeps its cache records: beside the run's data (a folder, or a saved RemoteFileSystem block
    on an ``s3://`` store; the block holds the base path only, credentials stay in the environment)."""
    root = store.run_uri(cfg.storage.root, cfg.run.name)
    if not remote.is_remote(root):
        return Path(root, RESULTS)
    from prefect.filesystems import RemoteFileSystem

    basepath = store.join(root, RESULTS)
    name = "metareward-results-" + hashlib.sha256(basepath.encode()).hexdigest()[:12]
    try:
        block = RemoteFileSystem.load(name)
        if block.basepath == basepath and not block.settings:
            return block
    except ValueError:  # not saved yet
        pass
    block = RemoteFileSystem(basepath=basepath)
    block.save(name, overwrite=True)
    return block


def _here(cfg: RunConfig, model: ModelRef) -> ModelRef:
    """M_0 given as a folder of the orchestrator's machine is resolved again on this worker (same config, same
    digest); every later model is a store URI that the stage pulls into its cache."""
    if remote.is_remote(model.uri) or Path(model.uri).exists() or model.iteration != 0:
        return model
    return stages.base_model(cfg) if not cfg.eft.enabled else model


def _run(task, cfg: RunConfig, t: int, model: ModelRef, *inputs) -> Manifest:
    opts = task.with_options(retries=cfg.execution.retries, retry_delay_seconds=cfg.execution.retry_delay_seconds,
                             result_storage=result_storage(cfg))
    return opts(cfg, t, _here(cfg, model), *inputs)


@flow(name="stage-generate", flow_run_name="{cfg.run.name}-generate-iter{t}")
def generate(cfg: RunConfig, t: int, model: ModelRef, prompts_m: Manifest) -> Manifest:
    return _run(T.generate, cfg, t, model, prompts_m)


@flow(name="stage-judge", flow_run_name="{cfg.run.name}-judge-iter{t}")
def judge(cfg: RunConfig, t: int, model: ModelRef, generate_m: Manifest) -> Manifest:
    return _run(T.judge, cfg, t, model, generate_m)


@flow(name="stage-meta-judge", flow_run_name="{cfg.run.name}-meta_judge-iter{t}")
def meta_judge(cfg: RunConfig, t: int, model: ModelRef, generate_m: Manifest, judge_m: Manifest) -> Manifest:
    return _run(T.meta_judge, cfg, t, model, generate_m, judge_m)


@flow(name="stage-train", flow_run_name="{cfg.run.name}-train-iter{t}")
def train(cfg: RunConfig, t: int, model: ModelRef, pairs_m: Manifest) -> Manifest:
    return _run(T.train, cfg, t, model, pairs_m)


@flow(name="stage-benchmark", flow_run_name="{cfg.run.name}-benchmark-iter{t}")
def benchmark(cfg: RunConfig, t: int, model: ModelRef, prompts_m: Manifest) -> Manifest:
    return _run(T.benchmark, cfg, t, model, prompts_m)


@flow(name="stage-prompt-pool", flow_run_name="{cfg.run.name}-prompt_pool-iter{t}")
def prompt_pool(cfg: RunConfig, t: int, model: ModelRef) -> Manifest:
    return _run(T.prompt_pool, cfg, t, model)


@flow(name="stage-eft", flow_run_name="{cfg.run.name}-eft-iter{t}")
def eft(cfg: RunConfig, t: int, model: ModelRef) -> Manifest:
    return _run(T.eft, cfg, t, model)


FLOWS = {"generate": generate, "judge": judge, "meta_judge": meta_judge, "train": train, "benchmark": benchmark,
         "prompt_pool": prompt_pool, "eft": eft}


class StageRunCrashed(RuntimeError):
    """A stage's deployment run Crashed: its process or container died under it (killed, out of memory, the
    machine lost), not the stage's code failing. Worth a fresh run, unlike a Failed run, whose stage task inside
    has already used its own retries."""


def retry_crashed(task, task_run, state) -> bool:
    """retry_condition_fn of the dispatch task: retry crashed deployment runs only."""
    return isinstance(getattr(state, "data", None), StageRunCrashed)


class RemoteStage:
    """Stands in for a GPU task in the orchestrating flow: the same call, run as the stage's deployment."""

    def __init__(self, stage: str, cfg: RunConfig):
        self.stage, self.flow, self.cfg = stage, FLOWS[stage], cfg

    def __call__(self, *args, **kwargs) -> Manifest:
        from prefect.deployments import run_deployment

        bound = inspect.signature(self.flow.fn).bind(*args, **kwargs)
        params = {k: v.model_dump(mode="json") if hasattr(v, "model_dump") else v
                  for k, v in bound.arguments.items()}
        t = params["t"]
        # named as the stage flow names itself once it runs: the worker names and labels its container so at once
        run = run_deployment(f"{self.flow.name}/{self.cfg.execution.stage_deployment}", parameters=params,
                             flow_run_name=f"{self.cfg.run.name}-{self.stage}-iter{t}",
                             timeout=self.cfg.execution.stage_timeout_s, poll_interval=2)
        if run.state is not None and run.state.is_crashed():
            raise StageRunCrashed(f"{self.stage} iter {t}: deployment run {run.name} crashed: {run.state.message}")
        if run.state is None or not run.state.is_completed():
            state = run.state.name if run.state else "unknown"
            raise stages.StageError(f"{self.stage} iter {t}: deployment run {run.name} ended {state}")
        done = store.read_manifest(store.stage_uri(self.cfg.storage.root, self.cfg.run.name, t, self.stage))
        if done is None:
            raise stages.StageError(f"{self.stage} iter {t}: deployment run {run.name} wrote no manifest")
        return done


def _dispatch_cache_key(ctx, params) -> str | None:
    """The stage task's own cache key (`tasks.stages.manifest_cache_key`), computed on the orchestrator. Where it
    cannot be computed here (a file the key reads exists on the GPU workers only), no key: the deployment runs and
    the stage decides there, as without this shortcut."""
    try:
        return T.manifest_cache_key(ctx, params)
    except Exception as exc:  # noqa: BLE001 - any failure only means "not known here to be cached"
        log.info("%s: cache key not computable on the orchestrator (%s); running the deployment", ctx.task.name, exc)
        return None


def dispatch_task(stage: str, cfg: RunConfig):
    """`RemoteStage` as a task of the orchestrating flow, under the stage's cache key.

    A stage whose manifest is already in the store under the key this run computes is Cached right here, from the
    record the stage task filed in the run's result storage: no deployment run starts, so a re-run of a finished
    iteration starts no GPU worker process or container (a process took 7-11 s to start on the 2-core test
    machine with a process worker; a container adds its own start-up). The task is named after the stage, so the
    key is the stage task's own; its runs are called ``<stage>-iter<t>-deployment`` beside the stage flow's
    ``<stage>-iter<t>``.
    Failures of the stage's code are retried by the stage task inside the deployment run; this task retries only a
    run that Crashed (its container or process killed, out of memory), in a fresh run: the stages that had finished
    stay Cached, the crashed one starts again from its inputs.
    """
    from prefect import task
    from prefect.context import TaskRunContext

    remote = RemoteStage(stage, cfg)

    @functools.wraps(FLOWS[stage].fn)  # the stage's signature: the cache key reads cfg, t and the inputs by name
    def call(*args, **kwargs) -> Manifest:
        return remote(*args, **kwargs)

    return task(call, name=stage, tags=["deployment"], retries=cfg.execution.retries,
                retry_delay_seconds=cfg.execution.retry_delay_seconds, retry_condition_fn=retry_crashed,
                cache_key_fn=_dispatch_cache_key,
                persist_result=True, result_serializer="json", result_storage=result_storage(cfg),
                task_run_name=lambda: f"{stage}-iter{TaskRunContext.get().parameters['t']}-deployment")
