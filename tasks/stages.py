"""One thin Prefect task per stage. The algorithm lives in `metareward.pipeline.stages`; a task adds only Prefect's
concerns: names, tags, retries, and a cache key.

Retries are set here only (`RunTasks`): every task of a run is retried ``execution.retries`` times,
``execution.retry_delay_seconds`` apart, when the failure may pass next time (`retry_worthwhile`).

The cache key mirrors the run store: it is the stage's key *plus the digest of the manifest now in the stage
folder and that folder*, and there is no key (no caching) while the folder holds no manifest or a damaged one
(`metareward.runstore.integrity`). So a Prefect cache hit can never hand back a manifest whose files were since
deleted, altered, moved or recomputed with other settings; the stage's own manifest check does the skipping before
Prefect has a record of it.
Results are Manifests (a few KB of JSON), never models or datasets, serialised as JSON (no pickle).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from prefect import task
from prefect.context import TaskRunContext

from metareward.pipeline import contract, modelrefs, stages
from metareward.runstore import integrity, store
from metareward.runstore.layout import RunLayout
from metareward.config import RunConfig
from metareward.records import Manifest, ModelRef
from metareward.registry import STAGES
from tasks.ui import progress_artifacts


def _input_digests(params: dict[str, Any]) -> dict[str, str]:
    return {k: v.digest for k, v in params.items() if isinstance(v, (Manifest, ModelRef))}


def _file_digests(stage: str, cfg: RunConfig) -> dict[str, str]:
    """Inputs a stage reads from files named in the config (prompt source, benchmark questions, ranked
    replies): their content is part of the key, so an edited file with the same path is not a cache hit."""
    if stage in ("prompts", "prompt_pool"):
        from metareward.inputs import prompt_sources

        return {"source": prompt_sources.source_digest(prompt_sources.read_source(cfg.prompts)[0], cfg.prompts)}
    if stage == "answers":  # the benchmark items' files (IFEval, LLMBar, MT-Bench, ...): what the stage asks
        from metareward.pipeline import answers

        return {"calls": answers.digest(answers.calls_for(cfg, [], answers.load_sources(cfg)))}
    if stage == "eft":
        from metareward.inputs import eft

        groups, _, _ = eft.read_ranked_file(cfg.eft.path, cfg.eft.lang)
        return {"ranked": eft.groups_digest(groups)}
    return {}


def manifest_cache_key(ctx: TaskRunContext, params: dict[str, Any]) -> str | None:
    stage = ctx.task.name
    cfg: RunConfig = params["cfg"]
    t: int = params["t"]
    key = contract.stage_key(stage, cfg, t, {**_input_digests(params), **_file_digests(stage, cfg)})
    folder = RunLayout.of(cfg).stage(t, stage)
    try:
        done = store.read_manifest(folder)
    except store.ManifestError:
        return None
    if done is None or integrity.problems(done, cfg.storage.model_cache):
        return None  # not done, or damaged: the stage runs (and recomputes it)
    # the folder too: a cached manifest names its files where they were, so a moved or copied run misses
    where = hashlib.sha256(folder.encode()).hexdigest()[:12]
    return f"{cfg.run.name}-{stage}-{t}-{key}-{done.key}-{done.digest}-{where}"


def retry_worthwhile(task, task_run, state) -> bool:
    """Prefect retries only what may pass next time: not bad input, a failed health gate, an out-of-memory (a
    StageError names the setting to change; retrying with the same settings would fail the same way) or a store
    outage (`store.StoreOutage`: it already kept trying for storage.outage_s)."""
    from metareward.config import ConfigError
    from metareward.engines.models import ModelNotFound
    from metareward.inputs.prompt_sets import PromptFileError

    exc = state.data if isinstance(getattr(state, "data", None), BaseException) else None
    return not isinstance(exc, (contract.StageError, ConfigError, PromptFileError, ModelNotFound, store.StoreOutage))


def file_under_next_key(task, task_run, state) -> None:
    """on_completion: a stage that ran had no cache key (no manifest before it ran), so Prefect kept no record of
    it. File its manifest under the key the next run computes (``manifest_cache_key`` once the manifest is there),
    so re-running the stage is a Prefect cache hit (Cached in the UI), on any worker sharing the result storage."""
    from prefect.results import get_result_store

    ctx = TaskRunContext.get()
    if ctx is None or not isinstance(state.result(raise_on_failure=False), Manifest):
        return
    key = manifest_cache_key(ctx, ctx.parameters)  # the manifest is there now: the key a re-run will compute
    results = get_result_store()
    if key is not None and not results.exists(key):
        results.write(state.result(), key=key)


COMMON = dict(cache_key_fn=manifest_cache_key, persist_result=True, result_serializer="json",
              on_completion=[file_under_next_key])


class RunTasks:
    """The tasks of this module as run ``cfg`` executes them, with its retry policy; each made on first use.

    >>> tasks = RunTasks(cfg); tasks.judge(cfg, 1, model, generate_m)   # doctest: +SKIP
    """

    def __init__(self, cfg: RunConfig):
        self._cfg = cfg

    def __getattr__(self, name: str):
        if name not in TASKS:
            raise AttributeError(name)
        e = self._cfg.execution
        task = globals()[name].with_options(retries=e.retries, retry_delay_seconds=e.retry_delay_seconds,
                                            retry_condition_fn=retry_worthwhile)
        setattr(self, name, task)
        return task


@contextmanager
def placed(cfg: RunConfig) -> Iterator[None]:
    """Where GPU stages run: ``execution.mode=deployments``, as deployment runs of the ``stage`` flow on a pool
    (`tasks.launch`); else in processes of their own (``execution.stage_process=own``:
    `metareward.pipeline.fanout`), the replicas of a sharded stage at once; else in this one. A sharded stage's
    shards are merged here."""
    from metareward.pipeline import contract, fanout
    from tasks import launch

    if cfg.execution.mode == "deployments":
        launcher = launch.run_deployments
    else:
        launcher = fanout.run_processes if cfg.execution.stage_process == "own" else None
    with contract.launching(launcher):
        yield


def _name(stage: str):
    return lambda: f"{stage}-iter{TaskRunContext.get().parameters['t']}"


@task(name="prompts", tags=["cpu"], task_run_name=_name("prompts"), **COMMON)
def prompts(cfg: RunConfig, t: int, pool_m: Manifest | None = None) -> Manifest:
    return stages.prompts(cfg, t, pool_m)


@task(name="prompt_pool", tags=["gpu"], task_run_name=_name("prompt_pool"), **COMMON)
def prompt_pool(cfg: RunConfig, t: int, model: ModelRef) -> Manifest:
    from metareward.pipeline import bootstrap

    with placed(cfg):
        return bootstrap.prompt_pool(cfg, t, model)


@task(name="eft", tags=["gpu"], task_run_name=_name("eft"), **COMMON)
def eft(cfg: RunConfig, t: int, model: ModelRef) -> Manifest:
    from metareward.pipeline import bootstrap

    with placed(cfg):
        return bootstrap.eft(cfg, t, model)


@task(name="generate", tags=["gpu"], task_run_name=_name("generate"), **COMMON)
def generate(cfg: RunConfig, t: int, model: ModelRef, prompts_m: Manifest) -> Manifest:
    with progress_artifacts(cfg, t, "generate"), placed(cfg):
        return stages.generate(cfg, t, model, prompts_m)


@task(name="judge", tags=["gpu"], task_run_name=_name("judge"), **COMMON)
def judge(cfg: RunConfig, t: int, model: ModelRef, generate_m: Manifest) -> Manifest:
    with progress_artifacts(cfg, t, "judge"), placed(cfg):
        return stages.judge(cfg, t, model, generate_m)


@task(name="meta_judge", tags=["gpu"], task_run_name=_name("meta_judge"), **COMMON)
def meta_judge(cfg: RunConfig, t: int, model: ModelRef, generate_m: Manifest, judge_m: Manifest) -> Manifest:
    with progress_artifacts(cfg, t, "meta_judge"), placed(cfg):
        return stages.meta_judge(cfg, t, model, generate_m, judge_m)


@task(name="pairs", tags=["cpu"], task_run_name=_name("pairs"), **COMMON)
def pairs(cfg: RunConfig, t: int, generate_m: Manifest, judge_m: Manifest, meta_m: Manifest | None) -> Manifest:
    return stages.pairs(cfg, t, generate_m, judge_m, meta_m)


@task(name="train", tags=["gpu"], task_run_name=_name("train"), **COMMON)
def train(cfg: RunConfig, t: int, model: ModelRef, pairs_m: Manifest) -> Manifest:
    with progress_artifacts(cfg, t, "train"), placed(cfg):
        return stages.train(cfg, t, model, pairs_m)


@task(name="answers", tags=["gpu"], task_run_name=_name("answers"), **COMMON)
def answers(cfg: RunConfig, t: int, model: ModelRef, prompts_m: Manifest) -> Manifest:
    with progress_artifacts(cfg, t, "answers"), placed(cfg):
        return stages.answers(cfg, t, model, prompts_m)


@task(name="benchmark", tags=["gpu"], task_run_name=_name("benchmark"), **COMMON)
def benchmark(cfg: RunConfig, t: int, model: ModelRef, prompts_m: Manifest, answers_m: Manifest,
              previous_m: Manifest | None = None) -> Manifest:
    with progress_artifacts(cfg, t, "benchmark"), placed(cfg):
        return stages.benchmark(cfg, t, model, prompts_m, answers_m, previous_m)


@task(name="base_model", tags=["cpu"], result_serializer="json")
def base_model(cfg: RunConfig) -> ModelRef:
    return modelrefs.base_model(cfg, refresh=True)  # the orchestrator notices a folder edited in place


TASKS = (*STAGES, "base_model")  # every stage's task is named as its stage
