"""The models the stages pass one another (`ModelRef`: a URI and a digest) and the engines opened on them: M_0
(the seed model, or its EFT'd version), M_t from a train manifest.
"""

from __future__ import annotations

import hashlib
from importlib import metadata

from metareward.config import RunConfig
from metareward.records import Manifest, ModelRef
from metareward.pipeline.contract import StageError
from metareward.runstore import store


def base_model(cfg: RunConfig) -> ModelRef:
    """M_0: the configured seed model, or the embedded SmolLM2 converted once into the cache."""
    from metareward.engines.models import EMBEDDED_DIST, resolve_model

    uri = resolve_model(cfg.model.path, cfg.storage.model_cache)
    if cfg.model.path is None:
        ident = f"embedded:{EMBEDDED_DIST}=={metadata.version(EMBEDDED_DIST)}"
    else:
        ident = f"path:{cfg.model.path}"
    return ModelRef(uri=uri, digest=hashlib.sha256(ident.encode()).hexdigest()[:16], iteration=0)


def initial_model(cfg: RunConfig) -> ModelRef:
    """M_0 as the iterations see it: the EFT'd seed model when EFT is on (its stage must have run), else the seed."""
    if not cfg.eft.enabled:
        return base_model(cfg)
    m = store.read_manifest(store.stage_uri(cfg.storage.root, cfg.run.name, 0, "eft"))
    if m is None:
        raise StageError("eft iter 0: no manifest in the run store (M_0 is the EFT stage's model)")
    return model_of(m)


def model_of(train_m: Manifest) -> ModelRef:
    """M_t as the next iteration's stages see it."""
    return ModelRef(uri=train_m.files["model"], digest=train_m.digest, iteration=train_m.iteration)


def train_manifest(cfg: RunConfig, t: int) -> Manifest:
    m = store.read_manifest(store.stage_uri(cfg.storage.root, cfg.run.name, t, "train"))
    if m is None:
        raise StageError(f"train iter {t}: no manifest in the run store")
    return m


def open_model_engine(cfg: RunConfig, model: ModelRef):
    from metareward.engines import open_engine

    from metareward.runstore.remote import local_model

    path = local_model(model.uri, model.digest, cfg.storage.model_cache)  # an s3:// model is pulled once
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
