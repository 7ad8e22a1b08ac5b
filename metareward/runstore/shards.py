"""Work committed in shards inside a long stage: the unit of commit, of seeding and of fan-out.

generate, judge and meta-judge cut their work list into consecutive slices of ``engine.shard_size`` items. Each
slice's rows are written atomically to ``<stage's shards>/<stage key>/<index>.jsonl`` (`layout.RunLayout.shards`) as soon as they are computed;
a resumed stage with the same key reads the finished shards back and computes only the rest. The shard folder is
named by the stage key, so shards of other settings are never mixed in (they are deleted), and the whole
``shards/`` folder is removed once the stage's manifest is written.

Fan-out: ``R`` replicas (processes, containers, hosts) each compute the shards ``i`` with ``i % R == r``
(`Part`), all of them handed to the engine at once (`metareward.engines.base.run_together`: vLLM schedules them
together, the CPU engine runs them one by one); then one merge reads every shard back and writes the manifest.

Seeds: item ``i`` of the stage's work list gets the seed ``base + i * samples`` (`item_seeds`), its sample ``j``
the stream ``base + i * samples + j``, where ``base`` depends on the run seed, the stage and the iteration. So
no two samples of a stage share a random stream, and a row depends neither on its shard, nor on the replica
that computed it, nor on a resume.

    rows, counts = run_sharded(folder, prompts, 64, lambda chunk, seeds: sample(chunk, seeds), Response, seed=0)
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

from pydantic import BaseModel

from metareward.runstore import store

T = TypeVar("T", bound=BaseModel)

SEED_SPACE = 1 << 40  # items x samples of one stage stay below this, so stage bases never overlap

log = logging.getLogger("metareward.runstore.shards")


@dataclass(frozen=True)
class Part:
    """Replica ``index`` of ``count``: it computes the shards ``i`` with ``i % count == index``."""

    index: int
    count: int

    def __post_init__(self) -> None:
        if not 0 <= self.index < self.count:
            raise ValueError(f"replica {self.index} of {self.count}: expected 0 <= replica < replicas")

    def owns(self, shard: int) -> bool:
        return shard % self.count == self.index


class PartDone(Exception):  # noqa: N818 - a signal, not an error: the replica's part is committed
    """Raised after a replica has committed its shards: the stage's manifest is the merge's to write."""


class ShardsMissing(RuntimeError):
    """The merge found shards no replica committed (a replica failed): it names them instead of computing them."""


# What this process does with a sharded stage: None = every shard (one process), a Part = its own shards,
# "merge" = none (the replicas did them). Set around one stage call by `computing`.
_mode: contextvars.ContextVar[Part | str | None] = contextvars.ContextVar("shard_mode", default=None)


@contextlib.contextmanager
def computing(mode: Part | str | None) -> Iterator[None]:
    """Inside, sharded stages compute ``mode``'s shards: None all, a `Part` its own, ``"merge"`` none."""
    token = _mode.set(mode)
    try:
        yield
    finally:
        _mode.reset(token)


def shard_dir(root: str, key: str) -> str:
    """This key's folder among a stage's shard folders ``root``; those of other keys are removed (they belong to
    other settings)."""
    fs = store.fs_for(root)
    if store.exists(root):
        for path in store.retrying(root, "list", lambda: fs.ls(root, detail=False)):
            if path.rstrip("/").rsplit("/", 1)[-1] != key:
                store.retrying(root, "delete", lambda path=path: store.rm(fs, path, recursive=True))
    return store.join(root, key)


def seed_base(seed: int, stage: str, t: int) -> int:
    """The first seed of a stage's samples: the run seed, stage and iteration hashed into the bits above
    `SEED_SPACE` (below 2**62, so any engine takes it as a 64-bit seed)."""
    h = int.from_bytes(hashlib.sha256(f"{seed}:{stage}:{t}".encode()).digest()[:8], "big")
    return (h % (1 << 22)) * SEED_SPACE


def item_seeds(base: int, start: int, count: int, samples: int) -> list[int]:
    """Seeds of items ``start .. start+count-1`` of a stage's work list, ``samples`` apart.

    >>> item_seeds(1000, 2, 3, 4)
    [1008, 1012, 1016]
    """
    if (start + count) * samples > SEED_SPACE:
        raise ValueError(f"{start + count} items x {samples} samples exceed the stage's seed space")
    return [base + (start + k) * samples for k in range(count)]


def shard_uri(folder: str, index: int) -> str:
    return store.join(folder, f"{index:05d}.jsonl")


def run_sharded(folder: str, items: Sequence, size: int, compute_shard: Callable[[list, list[int]], list[T]],
                model: type[T], base: int, samples: int = 1,
                together: Callable[[list[Callable[[], list[T]]]], Iterable[tuple[int, list[T]]]] | None = None,
                ) -> tuple[list[T], dict[str, int]]:
    """``compute_shard(slice, its items' seeds)`` over consecutive slices of ``items``; finished shard files are reused.

    ``together(jobs)`` runs the shards still to compute and yields ``(job, rows)`` as each ends (the engine's
    `run_together`; default: one after another); each is committed at once. Which shards this process computes
    is set by `computing`: a replica raises `PartDone` after committing its own. Returns every row in item order
    and counts {shards, shards_reused}."""
    n = (len(items) + size - 1) // size
    mode = _mode.get()
    done = {i for i in range(n) if store.exists(shard_uri(folder, i))}
    todo = [i for i in range(n) if i not in done and (mode is None or isinstance(mode, Part) and mode.owns(i))]
    if mode == "merge" and len(done) < n:
        raise ShardsMissing(f"{folder}: shards {sorted(set(range(n)) - done)} of {n} were not committed by the "
                            "replicas (see their logs); rerun the stage to compute only those")
    computed = _compute(folder, items, size, todo, compute_shard, base, samples, together)
    if isinstance(mode, Part):
        raise PartDone(f"replica {mode.index} of {mode.count}: {len(todo)} shards computed, "
                       f"{sum(mode.owns(i) for i in done)} reused")
    rows: list[T] = []
    for i in range(n):
        rows.extend(computed[i] if i in computed else store.read_jsonl(shard_uri(folder, i), model))
    if done:
        log.info("%d of %d shards reused from an interrupted attempt (%s)", len(done), n, folder)
    return rows, {"shards": n, "shards_reused": len(done)}


def _compute(folder: str, items: Sequence, size: int, todo: list[int], compute_shard, base: int, samples: int,
             together) -> dict[int, list]:
    """The ``todo`` shards, each committed as soon as ``together`` hands it back."""
    def job(i: int):
        chunk = list(items[i * size:(i + 1) * size])
        return lambda: compute_shard(chunk, item_seeds(base, i * size, len(chunk), samples))

    jobs = [job(i) for i in todo]
    runner = together or (lambda js: ((k, j()) for k, j in enumerate(js)))
    out = {}
    for k, part in runner(jobs) if jobs else ():
        store.write_jsonl(shard_uri(folder, todo[k]), part)
        out[todo[k]] = part
        log.info("shard %d committed (%d of %d this attempt): %s", todo[k], len(out), len(todo),
                 shard_uri(folder, todo[k]))
    return out
