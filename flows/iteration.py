"""One Meta-Rewarding iteration, M_{t-1} -> M_t, as a Prefect DAG (method.md section 10).

    prompts -> generate (actor, K) -> judge (N each) -> actor pairs (rho)
                                        └-> meta-judge (both orders) -> judge pairs (Elo, caps)
    actor + judge pairs -> DPO from M_{t-1} -> M_t -> benchmark
"""

from __future__ import annotations

from prefect import flow

from metareward.pipeline import stages
from metareward.runstore import store
from metareward.reporting import summary
from metareward.config import RunConfig
from metareward.records import Manifest, ModelRef
from tasks import stages as T
from tasks import ui


def _opts(task, cfg: RunConfig):
    if cfg.execution.mode == "deployments" and "gpu" in task.tags:  # the stage's deployment, in a fresh process
        from flows.stages import dispatch_task

        return dispatch_task(task.name, cfg)
    return task.with_options(retries=cfg.execution.retries, retry_delay_seconds=cfg.execution.retry_delay_seconds)


@flow(name="meta-rewarding-iteration", flow_run_name="{cfg.run.name}-iter{t}")
def meta_rewarding_iteration(cfg: RunConfig, t: int, model: ModelRef, pool: Manifest | None = None) -> dict:
    """Actor, judge and meta-judge roles of M_{t-1}, then DPO on both kinds of pairs. ``pool``: the generated
    prompt pool to sample from (None = the configured prompt source)."""
    prompts = _opts(T.prompts, cfg)(cfg, t, pool)
    responses = _opts(T.generate, cfg)(cfg, t, model, prompts)
    judgments = _opts(T.judge, cfg)(cfg, t, model, responses)
    verdicts = _opts(T.meta_judge, cfg)(cfg, t, model, responses, judgments) if cfg.judge_pairs_at(t) else None
    pairs = _opts(T.build_pairs, cfg)(cfg, t, responses, judgments, verdicts)
    trained = _opts(T.train, cfg)(cfg, t, model, pairs)
    done: dict[str, Manifest] = {"prompts": prompts, "generate": responses, "judge": judgments, "pairs": pairs,
                                 "train": trained}
    if verdicts is not None:
        done["meta_judge"] = verdicts
    if t == 1:  # the iteration-0 stages that ran for this run are reported with the first iteration
        for stage in ("prompt_pool", "eft"):
            m = store.read_manifest(store.stage_uri(cfg.storage.root, cfg.run.name, 0, stage))
            if getattr(cfg, stage).enabled and m is not None:
                done[stage] = m
    baseline = None
    if cfg.eval.enabled:
        done["benchmark"] = _opts(T.benchmark, cfg)(cfg, t, stages.model_of(trained), prompts)
        if t == 1:  # M_0 once, so the first iteration has something to compare with
            baseline = _opts(T.benchmark, cfg)(cfg, 0, model, prompts)
    s = summary.iteration_summary(t, done, baseline)
    summary.write_summary(cfg.storage.root, cfg.run.name, s)
    ui.publish_iteration(cfg, t)  # <run>/report/ and the iteration's markdown and table artifacts
    return s
