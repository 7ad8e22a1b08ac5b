"""A stage of a stored run, called from what the run store holds: the run's config, the manifests of the stages it
reads and the model it runs. What ``metareward stage`` and every stage process (a local replica, a deployment
run in a container on another host) use, so only the run's folder, the stage and the iteration cross a process
boundary.

    calls.run(cfg, "judge", 1)                          # the whole stage, manifest written
    calls.run(cfg, "judge", 1, shards.Part(0, 2))       # replica 0 of 2: its shards only
"""

from __future__ import annotations

import importlib

from metareward.config import RunConfig
from metareward.pipeline.contract import StageError
from metareward.pipeline.modelrefs import base_model, initial_model, model_of
from metareward.records import Manifest, ModelRef
from metareward.registry import stage as spec
from metareward.runstore import shards, store
from metareward.runstore.layout import RunLayout


def save_config(cfg: RunConfig) -> str:
    """The run's config into its folder (secrets masked), where every stage process reads it; returns its URI."""
    from metareward.runstore.redact import redact_obj

    uri = RunLayout.of(cfg).config
    store.write_json(uri, redact_obj(cfg.model_dump(mode="json")))
    return uri


def stored_config(folder: str) -> RunConfig:
    """The config of the run stored in ``folder``, placed where that folder is: its ``storage.root`` the folder's
    parent and its ``run.name`` the folder's name, whatever config.json says (a moved or copied run is that folder,
    not the place it was made in). The storage section enters no stage key, so nothing is recomputed for it. Its
    store timeouts and outage bound apply from here on (`store.configure`)."""
    from metareward.config import config_from_dict

    run = RunLayout.at(folder)
    uri = run.config
    if not store.exists(uri):
        raise store.StoreError(f"{uri}: no such run (no {uri.rsplit('/', 1)[-1]})")
    data = store.read_json(uri)
    if isinstance(data, dict):
        for section, field, value in (("storage", "root", run.root), ("run", "name", run.name)):
            if isinstance(data.setdefault(section, {}), dict):
                data[section][field] = value
    cfg = config_from_dict(data, uri)
    store.configure(cfg.storage)
    return cfg


def function(stage: str):
    """The stage's function, from its import path in the registry."""
    module, name = spec(stage).function.split(":")
    return getattr(importlib.import_module(module), name)


def manifest(cfg: RunConfig, stage: str, t: int) -> Manifest:
    m = store.read_manifest(RunLayout.of(cfg).stage(t, stage))
    if m is None:
        raise StageError(f"{stage} iter {t}: no manifest in the run store (run that stage first)")
    return m


def model(cfg: RunConfig, stage: str, t: int) -> ModelRef | None:
    """The model the stage runs at iteration t: M_{t-1}, M_t, or the seed model (`metareward.registry`)."""
    which = spec(stage).model
    if which == "none":
        return None
    if which == "seed":
        return base_model(cfg)
    made_by = t - 1 if which == "previous" else t
    return initial_model(cfg) if made_by == 0 else model_of(manifest(cfg, "train", made_by))


def inputs(cfg: RunConfig, stage: str, t: int) -> list[Manifest | None]:
    """The manifests the stage reads, in its call order; None for an input this iteration does not make."""
    out: list[Manifest | None] = []
    for name in spec(stage).inputs:
        if name == "meta_judge" and not cfg.at(t).judge_pairs:
            out.append(None)
        else:  # the baseline benchmark (t = 0) uses the held-out prompts, which every iteration shares
            out.append(manifest(cfg, name, max(t, 1) if name == "prompts" else t))
    if stage == "prompts":
        out.append(manifest(cfg, "prompt_pool", 0) if cfg.prompt_pool.enabled else None)
    if stage == "benchmark":  # the drift guard reads M_{t-1}'s answers: the benchmark of iteration t-1, where made
        previous = t >= 1 and cfg.health.drift.enabled
        out.append(store.read_manifest(RunLayout.of(cfg).stage(t - 1, "benchmark")) if previous else None)
    return out


def check_ready(cfg: RunConfig, stage: str, t: int) -> None:
    """A StageError, before anything is logged or written, for an unknown stage, an iteration the run does not
    have, or an input stage (or the model-making train stage) that has not finished."""
    try:
        which = spec(stage).model
    except KeyError as e:
        raise StageError(e.args[0]) from None
    if not 0 <= t <= cfg.run.iterations:
        raise StageError(f"{stage} --iter {t}: run {cfg.run.name} has iterations 0 to {cfg.run.iterations}")
    inputs(cfg, stage, t)
    made_by = t - 1 if which == "previous" else t
    if which in ("previous", "current") and made_by > 0:
        manifest(cfg, "train", made_by)


def arguments(cfg: RunConfig, stage: str, t: int) -> list:
    """``(cfg, t, [model], *inputs)`` as the stage function takes them."""
    ref = model(cfg, stage, t)
    return [cfg, t, *([ref] if ref is not None else []), *inputs(cfg, stage, t)]


def run(cfg: RunConfig, stage: str, t: int, mode: shards.Part | str | None = None) -> Manifest | None:
    """Run the stage from the store. ``mode``: None = the whole stage; a `shards.Part` = that replica's shards
    (returns None once they are committed); ``"merge"`` = read the replicas' shards and write the manifest."""
    with shards.computing(mode):
        try:
            return function(stage)(*arguments(cfg, stage, t))
        except shards.PartDone:
            return None
