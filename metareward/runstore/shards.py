"""Work committed in shards inside a long stage, so a crash loses at most one shard.

generate, judge and meta-judge cut their work list into consecutive slices of ``engine.shard_size`` items.
Each slice's rows are written atomically to ``<stage>/shards/<stage key>/<index>.jsonl`` as soon as they are
computed; a resumed stage with the same key reads the finished shards back and computes only the rest. The
shard folder is named by the stage key, so shards of other settings are never mixed in (they are deleted), and
the whole ``shards/`` folder is removed once the stage's manifest is written.

Determinism: shard ``i`` is computed with the seed ``seed + i * SHARD_SEED_STRIDE``, so its rows depend only on
its own items and the run seed: a resumed stage gives the same rows as an uninterrupted one.

    rows, counts = run_sharded(shard_dir, prompts, 64, lambda chunk, seed: sample(chunk, seed), Response, seed=0)
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TypeVar

from pydantic import BaseModel

from metareward.runstore import store

T = TypeVar("T", bound=BaseModel)

SHARDS = "shards"
SHARD_SEED_STRIDE = 1_000_003  # larger than any batch count, so shard seeds never overlap the batch offsets

log = logging.getLogger("metareward.runstore.shards")


def shard_dir(folder: str, key: str) -> str:
    """This key's shard folder; shards left by other keys are removed (they belong to other settings)."""
    root = store.join(folder, SHARDS)
    fs = store.fs_for(root)
    if store.exists(root):
        for path in store.retrying(root, "list", lambda: fs.ls(root, detail=False)):
            if path.rstrip("/").rsplit("/", 1)[-1] != key:
                store.retrying(root, "delete", lambda path=path: fs.rm(path, recursive=True))
    return store.join(root, key)


def shard_seed(seed: int, index: int) -> int:
    return seed + index * SHARD_SEED_STRIDE


def run_sharded(folder: str, items: Sequence, size: int, work: Callable[[list, int], list[T]], model: type[T],
                seed: int) -> tuple[list[T], dict[str, int]]:
    """``work(slice, shard seed)`` over consecutive slices of ``items``; finished shard files are reused.

    Returns every row in item order and counts {shards, shards_reused}."""
    rows: list[T] = []
    n = (len(items) + size - 1) // size
    reused = 0
    for i in range(n):
        uri = store.join(folder, f"{i:05d}.jsonl")
        if store.exists(uri):
            part = store.read_jsonl(uri, model)
            reused += 1
        else:
            part = work(list(items[i * size:(i + 1) * size]), shard_seed(seed, i))
            store.write_jsonl(uri, part)
            log.info("shard %d of %d committed: %s", i + 1, n, uri)
        rows.extend(part)
    if reused:
        log.info("%d of %d shards reused from an interrupted attempt (%s)", reused, n, folder)
    return rows, {"shards": n, "shards_reused": reused}
