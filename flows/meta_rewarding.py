"""The Meta-Rewarding loop: M_0 -> M_1 -> ... -> M_T, each iteration its own sub-flow run, then its report."""

from __future__ import annotations

from prefect import flow

from flows.iteration import iteration_report, meta_rewarding_iteration
from metareward.config import RunConfig
from metareward.pipeline.modelrefs import model_of
from metareward.records import ModelRef
from tasks.stages import RunTasks


@flow(name="meta-rewarding", flow_run_name="{cfg.run.name}", result_serializer="json")
def meta_rewarding(cfg: RunConfig) -> list[ModelRef]:
    """T iterations; iteration t trains M_t from M_{t-1} with pairs M_{t-1} made and judged itself. Before
    them, optionally: the seed model writes the prompt pool, and EFT turns the seed model into M_0. Returns
    M_1 .. M_T; each iteration's summary is in the store (`RunLayout.summary`)."""
    tasks = RunTasks(cfg)
    seed = tasks.base_model(cfg)
    pool = tasks.prompt_pool(cfg, 0, seed) if cfg.prompt_pool.enabled else None
    models = [model_of(tasks.eft(cfg, 0, seed)) if cfg.eft.enabled else seed]
    for t in range(1, cfg.run.iterations + 1):
        models.append(meta_rewarding_iteration(cfg, t, models[-1], pool))
        iteration_report(cfg, t, models[-1], models[0])
    return models[1:]


@flow(name="meta-rewarding-recipe", flow_run_name="{recipe}", result_serializer="json")
def meta_rewarding_recipe(recipe: str = "smoke", overrides: list[str] | None = None) -> list[ModelRef]:
    """The same loop, parameterised by a recipe name (or YAML path) and key=value overrides: what deployments
    and schedules use, so the Prefect UI form stays two fields."""
    from flows.stages import result_storage
    from metareward.config import load_config

    cfg = load_config(recipe, overrides or [])
    return meta_rewarding.with_options(result_storage=result_storage(cfg))(cfg)
