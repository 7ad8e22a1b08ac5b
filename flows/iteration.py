"""One Meta-Rewarding iteration, M_{t-1} -> M_t, as a Prefect DAG (method.md section 10), and the step that
reports it.

    prompts -> generate (actor, K) -> judge (N each) -> actor pairs (rho)
                                        └-> meta-judge (both orders) -> judge pairs (Elo, caps)
    actor + judge pairs -> DPO from M_{t-1} -> M_t

`meta_rewarding_iteration` is those six stage calls and returns M_t; `iteration_report` then benchmarks M_t (and
M_0 once, beside it, at t = 1): its answers, then their scores and the drift guard; writes the iteration's summary
and the run report, publishes the artifacts, and stops the run if the judge drifted.
Both take the stage tasks from `tasks.stages.RunTasks`, which gives them the run's retry policy.
"""

from __future__ import annotations

from prefect import flow

from metareward.config import RunConfig
from metareward.pipeline import drift_guard
from metareward.pipeline.modelrefs import model_of
from metareward.records import Manifest, ModelRef
from metareward.reporting import summary
from metareward.runstore.layout import RunLayout
from tasks import ui
from tasks.tracking import track_iteration
from tasks.stages import RunTasks


@flow(name="meta-rewarding-iteration", flow_run_name="{cfg.run.name}-iter{t}", result_serializer="json")
def meta_rewarding_iteration(cfg: RunConfig, t: int, model: ModelRef, pool: Manifest | None = None) -> ModelRef:
    """Actor, judge and meta-judge roles of M_{t-1}, then DPO on both kinds of pairs: returns M_t. ``pool``: the
    generated prompt pool to sample from (None = the configured prompt source)."""
    tasks = RunTasks(cfg)
    prompts = tasks.prompts(cfg, t, pool)
    responses = tasks.generate(cfg, t, model, prompts)
    judgments = tasks.judge(cfg, t, model, responses)
    verdicts = tasks.meta_judge(cfg, t, model, responses, judgments) if cfg.at(t).judge_pairs else None
    pairs = tasks.pairs(cfg, t, responses, judgments, verdicts)
    return model_of(tasks.train(cfg, t, model, pairs))


@flow(name="meta-rewarding-report", flow_run_name="{cfg.run.name}-iter{t}-report", result_serializer="json")
def iteration_report(cfg: RunConfig, t: int, model: ModelRef, first: ModelRef) -> dict:
    """Iteration t's report: M_t (``model``) on the held-out prompts, M_0 (``first``) beside it at t = 1, the
    summary (returned, and stored beside the iteration's stages), the run report and the iteration's artifacts, and
    the iteration in the experiment tracker (tracking.backend)."""
    tasks = RunTasks(cfg)
    done = summary.stored_manifests(cfg, t)
    baseline = None
    if cfg.eval.enabled:
        if t == 1:  # M_0 once: the first iteration's comparison, and the answers M_1's drift is measured against
            baseline = tasks.benchmark(cfg, 0, first, done["prompts"], tasks.answers(cfg, 0, first, done["prompts"]))
        previous = baseline if t == 1 else summary.benchmark_of(cfg, t - 1)
        answers = tasks.answers(cfg, t, model, done["prompts"])
        done["benchmark"] = tasks.benchmark(cfg, t, model, done["prompts"], answers,
                                            previous if cfg.health.drift.enabled else None)
    failed = drift_guard.record(cfg, t, summary.drift_history(cfg, t)) if cfg.eval.enabled else []
    out = summary.iteration_summary(t, done, baseline)
    summary.write_summary(RunLayout.of(cfg), out)
    ui.publish_iteration(cfg, t)  # <run>/report/ and the iteration's markdown and table artifacts
    if cfg.tracking.backend != "none":
        track_iteration(cfg, t)  # MLflow / W&B, once per iteration and destination
    drift_guard.stop(cfg, t, failed)  # after the summary, report and tracker show it: a drifted judge ends the run
    return out
