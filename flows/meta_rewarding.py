"""The Meta-Rewarding loop: M_0 -> M_1 -> ... -> M_T, each iteration its own sub-flow run."""

from __future__ import annotations

from prefect import flow

from flows.iteration import _opts, meta_rewarding_iteration
from metareward.pipeline import modelrefs
from metareward.config import RunConfig
from tasks import stages as T


@flow(name="meta-rewarding", flow_run_name="{cfg.run.name}")
def meta_rewarding(cfg: RunConfig) -> list[dict]:
    """T iterations; iteration t trains M_t from M_{t-1} with pairs M_{t-1} made and judged itself. Before
    them, optionally: the seed model writes the prompt pool, and EFT turns the seed model into M_0."""
    model = T.base_model(cfg)
    pool = _opts(T.prompt_pool, cfg)(cfg, 0, model) if cfg.prompt_pool.enabled else None
    if cfg.eft.enabled:
        model = modelrefs.model_of(_opts(T.eft, cfg)(cfg, 0, model))
    summaries = []
    for t in range(1, cfg.run.iterations + 1):
        s = meta_rewarding_iteration(cfg, t, model, pool)
        summaries.append(s)
        model = modelrefs.model_of(modelrefs.train_manifest(cfg, t))
    return summaries


@flow(name="meta-rewarding-recipe", flow_run_name="{recipe}")
def meta_rewarding_recipe(recipe: str = "smoke", overrides: list[str] | None = None) -> list[dict]:
    """The same loop, parameterised by a recipe name (or YAML path) and key=value overrides: what deployments
    and schedules use, so the Prefect UI form stays two fields."""
    from flows.stages import result_storage
    from metareward.config import load_config

    cfg = load_config(recipe, overrides or [])
    return meta_rewarding.with_options(result_storage=result_storage(cfg))(cfg)
