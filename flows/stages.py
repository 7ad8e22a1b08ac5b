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

import hashlib
import inspect
from pathlib import Path

from prefect import flow

from metareward import remote, stages, store
from metareward.config import RunConfig
from metareward.records import Manifest, ModelRef
from tasks import stages as T

RESULTS = ".prefect-results"


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
        run = run_deployment(f"{self.flow.name}/{self.cfg.execution.stage_deployment}", parameters=params,
                             timeout=self.cfg.execution.stage_timeout_s, poll_interval=2)
        if run.state is None or not run.state.is_completed():
            state = run.state.name if run.state else "unknown"
            raise stages.StageError(f"{self.stage} iter {t}: deployment run {run.name} ended {state}")
        done = store.read_manifest(store.stage_uri(self.cfg.storage.root, self.cfg.run.name, t, self.stage))
        if done is None:
            raise stages.StageError(f"{self.stage} iter {t}: deployment run {run.name} wrote no manifest")
        return done
