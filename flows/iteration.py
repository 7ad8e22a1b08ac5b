"""One Meta-Rewarding iteration, M_{t-1} -> M_t, as a Prefect DAG (method.md section 10), and the step that
reports it.

    prompts -> generate (actor, K) -> judge (N each) -> actor pairs (rho)
                                        └-> meta-judge (both orders) -> judge pairs (Elo, caps)
    actor + judge pairs -> DPO from M_{t-1} -> M_t

`meta_rewarding_iteration` is those six stage calls and returns M_t; `iteration_report` then benchmarks M_t (and
M_0 once, beside it, at t = 1), writes the iteration's summary and the run report, and publishes the artifacts.
Both take the stage tasks from `StageTasks`, the one place where the run's retry settings are applied to them.
"""

from __future__ import annotations

from prefect import flow

from metareward.config import RunConfig
from metareward.pipeline.modelrefs import model_of
from metareward.records import Manifest, ModelRef
from metareward.registry import STAGES as REGISTRY
from metareward.reporting import summary
from tasks import stages as T
from tasks import ui

# The stage tasks, named as their stage functions are (`pairs` is build_pairs), from the registry.
STAGES = tuple(s.function.rsplit(":", 1)[1] for s in REGISTRY.values())


def configured(task, cfg: RunConfig):
    """``task`` with this run's ``execution.retries`` and ``retry_delay_seconds``. Where a GPU stage runs (this
    process, processes of its own, deployment runs on a pool) is the task's own choice (`tasks.stages.placed`)."""
    return task.with_options(retries=cfg.execution.retries, retry_delay_seconds=cfg.execution.retry_delay_seconds)


class StageTasks:
    """The stage tasks of tasks/stages.py as this run executes them (`configured`), each made on first use."""

    def __init__(self, cfg: RunConfig):
        self._cfg = cfg

    def __getattr__(self, stage: str):
        if stage not in STAGES:
            raise AttributeError(stage)
        task = configured(getattr(T, stage), self._cfg)
        setattr(self, stage, task)
        return task


@flow(name="meta-rewarding-iteration", flow_run_name="{cfg.run.name}-iter{t}")
def meta_rewarding_iteration(cfg: RunConfig, t: int, model: ModelRef, pool: Manifest | None = None) -> ModelRef:
    """Actor, judge and meta-judge roles of M_{t-1}, then DPO on both kinds of pairs: returns M_t. ``pool``: the
    generated prompt pool to sample from (None = the configured prompt source)."""
    s = StageTasks(cfg)
    prompts = s.prompts(cfg, t, pool)
    responses = s.generate(cfg, t, model, prompts)
    judgments = s.judge(cfg, t, model, responses)
    verdicts = s.meta_judge(cfg, t, model, responses, judgments) if cfg.judge_pairs_at(t) else None
    pairs = s.build_pairs(cfg, t, responses, judgments, verdicts)
    return model_of(s.train(cfg, t, model, pairs))


@flow(name="meta-rewarding-report", flow_run_name="{cfg.run.name}-iter{t}-report")
def iteration_report(cfg: RunConfig, t: int, model: ModelRef, first: ModelRef) -> dict:
    """Iteration t's report: M_t (``model``) on the held-out prompts, M_0 (``first``) beside it at t = 1, the
    summary (``iter_<t>/summary.json|md``, returned), the run report and the iteration's artifacts."""
    s = StageTasks(cfg)
    done = summary.stored_manifests(cfg, t)
    baseline = None
    if cfg.eval.enabled:
        done["benchmark"] = s.benchmark(cfg, t, model, done["prompts"])
        if t == 1:  # M_0 once, so the first iteration has something to compare with
            baseline = s.benchmark(cfg, 0, first, done["prompts"])
    out = summary.iteration_summary(t, done, baseline)
    summary.write_summary(cfg.storage.root, cfg.run.name, out)
    ui.publish_iteration(cfg, t)  # <run>/report/ and the iteration's markdown and table artifacts
    return out
