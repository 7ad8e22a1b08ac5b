"""The run-store contract every stage goes through: (config, t, inputs) -> Manifest, runnable without Prefect.

1. the stage's *key* is a digest of its inputs' digests, the config sections it reads and its code;
2. if the stage folder's ``manifest.json`` (`metareward.runstore.layout`) exists with that key and the files it lists
   are whole (`metareward.runstore.integrity`), the stage is done: return it;
3. otherwise (a damaged stage included) drop any old manifest, compute, write the data, then the manifest last.

So a rerun skips finished work even without Prefect's cache, and a crash never leaves a stage marked done.
A stage's code enters its key as a digest of the code itself (`metareward.runstore.code`), not of file paths:
moving a module keeps every key.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata

from metareward import progress
from metareward.config import RunConfig
from metareward.registry import PIPELINE, stage as spec
from metareward.records import Manifest
from metareward.runstore import integrity, shards, store
from metareward.runstore.layout import RunLayout
from metareward.runstore.code import code_digest as _digest_of

log = logging.getLogger("metareward")

VERSIONED = ("torch", "transformers", "trl", "vllm", "prefect", "pydantic")


class StageError(RuntimeError):
    """A stage that cannot produce its output (e.g. no preference pair survived); names the stage."""


@dataclass
class Output:
    """What a stage's compute function returns; `execute` turns it into the Manifest."""

    files: dict[str, str] = field(default_factory=dict)
    digests: dict[str, str] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    stats: dict = field(default_factory=dict)

    def add(self, name: str, uri: str, digest: str) -> None:
        """A file the stage wrote, with its digest."""
        self.files[name], self.digests[name] = uri, digest

    def merge(self, other: Output) -> None:
        for mine, theirs in ((self.files, other.files), (self.digests, other.digests), (self.counts, other.counts),
                             (self.stats, other.stats)):
            mine.update(theirs)


# ----------------------------------------------------------------------------------------------- keys


def code_digest(stage: str, backend: str) -> str:
    """The digest of the code a stage runs: `PIPELINE`, the stage's own modules and, when it runs an engine, those
    of ``backend`` (``engine.backend``; `metareward.registry.code_of`), by content."""
    from metareward.registry import code_of

    return _digest_of(f"metareward.{m}" for m in (*PIPELINE, *code_of(stage, backend)))[:16]


def stage_key(stage: str, cfg: RunConfig, t: int, inputs: dict[str, str]) -> str:
    """The digest that decides whether a stage's stored output can be reused."""
    parts = [stage, str(t), str(cfg.run.seed), cfg.at(t).digest(*spec(stage).sections),
             code_digest(stage, cfg.engine.backend)]
    parts += [f"{k}={v}" for k, v in sorted(inputs.items())]
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def _versions() -> dict[str, str]:
    out = {}
    for name in VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


# How `execute` runs a GPU stage's compute function. The task layer sets a launcher (`metareward.pipeline.fanout`): the stage
# then runs in processes of its own, and a sharded stage is merged here. A stage process is told the key its
# caller computed, and refuses another (its store or code differs).
Launcher = Callable[[RunConfig, str, int, str], None]
_launcher: ContextVar[Launcher | None] = ContextVar("stage_launcher", default=None)
_expected_key: ContextVar[str | None] = ContextVar("expected_stage_key", default=None)
_launched_at: ContextVar[float | None] = ContextVar("stage_launched_at", default=None)


@contextmanager
def launching(launcher: Launcher | None, expected_key: str | None = None) -> Iterator[None]:
    """Inside, GPU stages run through ``launcher(cfg, stage, t, key)`` (None: in this process), and a stage whose
    key is not ``expected_key`` (when given) is refused."""
    tokens = (_launcher.set(launcher), _expected_key.set(expected_key))
    try:
        yield
    finally:
        _launcher.reset(tokens[0])
        _expected_key.reset(tokens[1])


def execute(stage: str, cfg: RunConfig, t: int, inputs: dict[str, str], compute: Callable[[str], Output]) -> Manifest:
    """Run ``compute(stage_folder)`` unless a manifest with the same key exists; write the manifest last."""
    folder = RunLayout.of(cfg).stage(t, stage)
    key = stage_key(stage, cfg, t, inputs)
    done = finished(stage, t, folder, key, cfg.storage.model_cache)
    if done is not None:
        log.info("%s iter %d: done already (manifest %s), skipping", stage, t, key)
        return done
    expected = _expected_key.get()
    if expected is not None and expected != key:
        raise StageError(f"{stage} iter {t}: this process computes the stage key {key}, its caller {expected}: "
                         "the run store's config or the code differs from the caller's")
    launch = _launcher.get()
    if launch is not None and spec(stage).device == "gpu":
        return _launched(launch, stage, cfg, t, inputs, key, folder, compute)
    return _compute(stage, cfg, t, inputs, key, folder, compute)


def finished(stage: str, t: int, folder: str, key: str, model_cache: str | None = None) -> Manifest | None:
    """The stage's manifest when it has ``key`` and its files are whole (`integrity`); else None. A damaged stage
    (a file missing or altered, or a manifest that is not one) is named in a warning: it is recomputed, never used."""
    try:
        done = store.read_manifest(folder)
    except store.ManifestError as e:
        log.warning("%s iter %d: recomputing: %s", stage, t, e)
        return None
    if done is None or done.key != key:
        return None
    wrong = integrity.problems(done, model_cache)
    if wrong:
        log.warning("%s iter %d: damaged, recomputing: %s", stage, t, integrity.describe(wrong))
        return None
    return done


def _launched(launch: Launcher, stage: str, cfg: RunConfig, t: int, inputs: dict[str, str], key: str, folder: str,
              compute: Callable[[str], Output]) -> Manifest:
    """The stage in processes of its own; a sharded one's shards merged here, any other's manifest read back."""
    token = _launched_at.set(time.perf_counter())  # the stage's seconds count its processes too
    try:
        launch(cfg, stage, t, key)
        m = store.read_manifest(folder)  # one process ran the whole stage
        if m is not None and m.key == key:
            return m
        if not spec(stage).sharded:
            raise StageError(f"{stage} iter {t}: the stage process ended without writing its manifest ({folder})")
        with shards.computing("merge"):  # the replicas committed shards only
            return _compute(stage, cfg, t, inputs, key, folder, compute)
    finally:
        _launched_at.reset(token)


def _compute(stage: str, cfg: RunConfig, t: int, inputs: dict[str, str], key: str, folder: str,
              compute: Callable[[str], Output]) -> Manifest:
    store.invalidate(folder)
    store.remove_temporaries(folder)  # half-written files of an interrupted attempt
    log.info("%s iter %d: running", stage, t)
    start = started(time.perf_counter())
    try:
        with progress.stage(f"{stage} iter {t}"):
            out = compute(folder)
    except Exception as e:
        from metareward.pipeline import faults

        if faults.is_oom(e):  # name the setting to lower; finished shards and stages stay for the rerun
            raise StageError(faults.oom_message(stage, t, cfg, e)) from e
        raise
    checks, sizes = integrity.seal(out.files, out.digests, cfg.storage.model_cache)
    manifest = Manifest(
        stage=stage, iteration=t, run=cfg.run.name, key=key, uri=folder, files=out.files, digests=out.digests,
        checks=checks, sizes=sizes, counts=out.counts, stats=out.stats, inputs=inputs, config_digest=cfg.digest(), versions=_versions(),
        seed=cfg.run.seed, duration_s=round(time.perf_counter() - start, 3),
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    store.write_manifest(manifest)
    store.remove(RunLayout.of(cfg).shards(t, stage))  # scratch space of a finished stage
    return manifest


def started(now: float) -> float:
    """When the stage started (`time.perf_counter`): its launch, when it ran in processes of its own, else ``now``."""
    at = _launched_at.get()
    return now if at is None else at


def write_rows(out: Output, folder: str, name: str, rows) -> None:
    uri = store.join(folder, f"{name}.jsonl")
    out.add(name, uri, store.write_jsonl(uri, rows))


def sharded(cfg: RunConfig, t: int, stage: str, inputs: dict[str, str], folder: str, items, compute_shard, model,
            together=None):
    """`shards.run_sharded` in this stage's key-named shard folder, its seeds spaced by the stage's samples per
    item (`metareward.registry`)."""
    where = shards.shard_dir(RunLayout.of(cfg).shards(t, stage), stage_key(stage, cfg, t, inputs))
    field = spec(stage).samples
    samples = int(_pick_field(cfg, field)) if field else 1
    return shards.run_sharded(where, items, cfg.engine.shard_size, compute_shard, model,
                              shards.seed_base(cfg.run.seed, stage, t), samples, together)


def _pick_field(cfg: RunConfig, dotted: str):
    node = cfg
    for part in dotted.split("."):
        node = getattr(node, part)
    return node
