"""Where everything of a run lives: the one owner of the run store's paths.

``storage.root`` is read here only (`of`), and ``iter_`` is spelled here only::

    <root>/models/<digest>/                 seed models imported by content, shared by the runs of one store
    <root>/<run>/config.json                the RunConfig of the latest invocation (secrets masked)
    <root>/<run>/iter_<t>/<stage>/          a stage's data; manifest.json written last means "done"
    <root>/<run>/iter_<t>/<stage>/shards/   a sharded stage's committed shards, until its manifest
    <root>/<run>/iter_<t>/health.json       the judge-health gates of iteration t
    <root>/<run>/iter_<t>/summary.json|md   iteration t's summary
    <root>/<run>/iter_<t>/tracked.json      the tracking run iteration t was logged to (tracking.backend)
    <root>/<run>/iter_0/seed_model.json     what M_0 was made from
    <root>/<run>/report/                    the run report (markdown, html, plots)
    <root>/<run>/eval_cache/                benchmark judges' answers, reused across iterations
    <root>/<run>/.prefect-results/          Prefect's cache records, beside the data they describe

    >>> run = RunLayout("s3://bucket/runs", "smoke")
    >>> run.stage(2, "judge"), run.summary(2, "md")
    ('s3://bucket/runs/smoke/iter_2/judge', 's3://bucket/runs/smoke/iter_2/summary.md')
    >>> RunLayout.at("s3://bucket/runs/smoke") == run, iteration_of("iter_12/"), iteration_of("report")
    (True, 12, None)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from metareward.runstore import store

ITERATION = re.compile(r"iter_(\d+)")
CONFIG = "config.json"
SHARDS = "shards"


def iteration_of(name: str) -> int | None:
    """t of an ``iter_<t>`` folder name (a trailing slash allowed), else None."""
    found = ITERATION.fullmatch(name.rstrip("/").rsplit("/", 1)[-1])
    return int(found.group(1)) if found else None


@dataclass(frozen=True)
class RunLayout:
    """The paths of run ``name`` under store ``root`` (a folder, made absolute, or a URI such as ``s3://b/runs``)."""

    root: str
    name: str

    def __post_init__(self) -> None:
        if "://" not in self.root:  # a relative folder means the same run from any working directory
            object.__setattr__(self, "root", str(Path(self.root).expanduser().resolve()))

    @classmethod
    def of(cls, cfg) -> RunLayout:
        """The layout of the run a RunConfig describes (``storage.root``, ``run.name``)."""
        return cls(cfg.storage.root, cfg.run.name)

    @classmethod
    def at(cls, run: str) -> RunLayout:
        """The layout of the run stored in folder or URI ``run``."""
        root, _, name = run.rstrip("/").rpartition("/")
        if not name:
            raise ValueError(f"{run}: not a run folder")
        return cls(root or ".", name)

    @property
    def run(self) -> str:
        return store.join(self.root, self.name)

    def stored(self) -> RunLayout:
        """This layout, once its folder holds a run (a config.json); else a StoreError naming the folder or file."""
        if not store.exists(self.config):
            raise store.StoreError(f"{self.run}: no such run folder" if not store.exists(self.run) else
                                   f"{self.config}: no such run (no {CONFIG}: not a run folder)")
        return self

    @property
    def config(self) -> str:
        return store.join(self.run, CONFIG)

    @property
    def report(self) -> str:
        return store.join(self.run, "report")

    @property
    def eval_cache(self) -> str:
        return store.join(self.run, "eval_cache")

    @property
    def results(self) -> str:
        return store.join(self.run, ".prefect-results")

    def model(self, digest: str) -> str:
        """A seed model's copy in the store, by content digest."""
        return store.join(self.root, "models", digest)

    def iteration(self, t: int) -> str:
        return store.join(self.run, f"iter_{t}")

    def stage(self, t: int, stage: str) -> str:
        return store.join(self.iteration(t), stage)

    def shards(self, t: int, stage: str) -> str:
        """The stage's shard folders (one per stage key)."""
        return store.join(self.stage(t, stage), SHARDS)

    def health(self, t: int) -> str:
        return store.join(self.iteration(t), "health.json")

    def summary(self, t: int, ext: str) -> str:
        """Iteration t's summary; ``ext`` json or md."""
        return store.join(self.iteration(t), f"summary.{ext}")

    def tracked(self, t: int) -> str:
        """Which tracking run iteration t was logged to (written after logging: a re-run does not log it twice)."""
        return store.join(self.iteration(t), "tracked.json")

    @property
    def seed_record(self) -> str:
        return store.join(self.iteration(0), "seed_model.json")

    def iterations(self) -> list[int]:
        """The iterations with a folder in the store, in order (0 holds the bootstrap and M_0's benchmark)."""
        fs = store.fs_for(self.run)
        if not store.exists(self.run):
            raise store.StoreError(f"{self.run}: no such run folder")
        listed = store.retrying(self.run, "list", lambda: fs.ls(self.run, detail=False))
        return sorted(t for path in listed if (t := iteration_of(path)) is not None)
