"""The models the stages pass one another (`ModelRef`: a URI and a digest) and the engines opened on them: M_0
(the seed model, or its EFT'd version), M_t from a train manifest.

M_0 travels like M_t. The orchestrator's `base_model` resolves ``model.path`` on its own machine (the embedded
SmolLM2 converted once, a local folder, or a hub id downloaded once), names it by its content digest, copies it
to an ``s3://`` store once (`RunLayout.model`, shared by the runs of that store; on a local store the folder
is used in place) and records the result in the run's seed record (`RunLayout.seed_record`). A stage process
elsewhere (a container, another host) calls `base_model` too and gets that record, so it never needs the folder
or the hub; it pulls the store copy into its model cache (`open_model_engine`, `remote.local_model`).

    seed record   {"made_from": "/models/m0", "model": {"uri": "models/3f2a...", "digest": "3f2a...",
                   "iteration": 0}}

The store copy is named relative to the store root (a run moved to another bucket finds the copy under its new
root; where that root lacks it, `base_model` imports ``model.path`` again), a local folder by its path.
"""

from __future__ import annotations

from importlib import metadata

from metareward.config import RunConfig
from metareward.records import Manifest, ModelRef
from metareward.pipeline.contract import StageError
from metareward.runstore import remote, store
from metareward.runstore.layout import RunLayout


def base_model(cfg: RunConfig, refresh: bool = False) -> ModelRef:
    """M_0: the run store's record when it was made from the same ``model.path`` (so a stage process needs neither
    the folder nor the hub), else the seed model imported into the store and recorded. ``refresh`` imports
    again even over a matching record (a folder edited in place gets its new digest; an unchanged one is not
    read again, `remote.cached_folder_digest`)."""
    record, source = seed_record_uri(cfg), seed_source(cfg.model.path)
    ref = None if refresh else recorded_model(record, source, cfg)
    if ref is None:
        ref = import_model(cfg, cfg.model.path)
        if recorded_model(record, source, cfg) != ref:
            store.write_json(record, {"made_from": source, "model": {**ref.model_dump(mode="json"),
                                                                     "uri": _stored_name(cfg, ref)}})
    return ref


def seed_record_uri(cfg: RunConfig) -> str:
    return RunLayout.of(cfg).seed_record


def seed_source(path: str | None) -> str:
    """What M_0 is made from: ``model.path`` as configured, or the embedded model's wheel and version."""
    if path is not None:
        return path
    from metareward.engines.models import EMBEDDED_DIST

    try:
        return f"embedded:{EMBEDDED_DIST}=={metadata.version(EMBEDDED_DIST)}"
    except metadata.PackageNotFoundError:  # matches no record; importing then says which wheel is missing
        return f"embedded:{EMBEDDED_DIST}"


def recorded_model(record: str, source: str, cfg: RunConfig) -> ModelRef | None:
    """The recorded M_0 if it was made from ``source`` and is where the record says, else None (import it again). A
    store copy is named relative to the store root, so a run moved to another folder or bucket finds it there."""
    if not store.exists(record):
        return None
    rec = store.read_json(record)
    if not isinstance(rec, dict) or rec.get("made_from") != source:
        return None
    ref = ModelRef.model_validate(rec["model"])
    copy = RunLayout.of(cfg).model(ref.digest)
    # a relative name, or an earlier version's absolute URI of a store copy (s3://<old root>/models/<digest>)
    if store.is_relative(ref.uri) or (remote.is_remote(ref.uri) and ref.uri.endswith(f"/models/{ref.digest}")):
        ref = ref.model_copy(update={"uri": copy})
    there = store.exists(ref.uri + remote.COMPLETE) if remote.is_remote(ref.uri) else store.exists(ref.uri)
    return ref if there else None


def _stored_name(cfg: RunConfig, ref: ModelRef) -> str:
    """How the seed record names M_0: a store copy relative to the store root (``models/<digest>``), a local
    folder as it is."""
    root = RunLayout.of(cfg).root
    return ref.uri[len(root) + 1:] if ref.uri.startswith(root + "/models/") else ref.uri


def import_model(cfg: RunConfig, path: str | None) -> ModelRef:
    """The model at ``path`` as a folder of this machine, named by its content digest; on an ``s3://`` store its
    URI is the store copy (uploaded once), on a local store the folder itself."""
    from metareward.engines.models import model_folder

    folder = model_folder(path, cfg.storage.model_cache)
    digest = remote.cached_folder_digest(folder, cfg.storage.model_cache)
    run = RunLayout.of(cfg)
    uri = remote.store_model(folder, run.model(digest)) if remote.is_remote(run.root) else folder
    return ModelRef(uri=uri, digest=digest, iteration=0)


def initial_model(cfg: RunConfig) -> ModelRef:
    """M_0 as the iterations see it: the EFT'd seed model when EFT is on (its stage must have run), else the seed."""
    if not cfg.eft.enabled:
        return base_model(cfg)
    m = store.read_manifest(RunLayout.of(cfg).stage(0, "eft"))
    if m is None:
        raise StageError("eft iter 0: no manifest in the run store (M_0 is the EFT stage's model)")
    return model_of(m)


def model_of(train_m: Manifest) -> ModelRef:
    """M_t as the next iteration's stages see it."""
    return ModelRef(uri=train_m.files["model"], digest=train_m.digest, iteration=train_m.iteration)


def open_model_engine(cfg: RunConfig, model: ModelRef):
    from metareward.engines import open_engine

    path = remote.local_model(model.uri, model.digest, cfg.storage.model_cache)  # an s3:// model is pulled once
    return open_engine(cfg.engine.backend, path, engine_cfg=cfg.engine, model_cfg=cfg.model, seed=cfg.run.seed)


class LazyEngine:
    """The stage's engine, opened on first use: a resumed stage whose shards are all done loads no model."""

    def __init__(self, cfg: RunConfig, model: ModelRef):
        self.cfg, self.model, self.engine = cfg, model, None

    def get(self):
        if self.engine is None:
            self.engine = open_model_engine(self.cfg, self.model)
        return self.engine

    def close(self) -> None:
        if self.engine is not None:
            self.engine.close()


def judge_model(spec: str | None, current: ModelRef, seed_model) -> tuple[ModelRef, str]:
    """The model a local judge runs and its name: ``None`` = M_0 (``seed_model()``), ``"self"`` = ``current``, or a
    model folder (named by its path: a cached call is reused only for that very folder)."""
    import hashlib

    if spec == "self":
        return current, f"M_{current.iteration}"
    if spec is None:
        return seed_model(), "M_0"
    return ModelRef(uri=spec, digest=hashlib.sha256(f"path:{spec}".encode()).hexdigest()[:16]), spec
