"""Shards: a stage's work list is committed slice by slice; an interrupted stage recomputes only what is missing."""

from pathlib import Path

import pytest

from metareward.runstore import shards, store
from metareward.records import Prompt


def _work(calls, fail_at=None):
    def work(chunk, seed):
        calls.append((tuple(p.id for p in chunk), seed))
        if fail_at is not None and len(calls) == fail_at:
            raise RuntimeError("worker lost")
        return [Prompt(id=p.id, prompt=f"{p.prompt} / seed {seed}") for p in chunk]
    return work


ITEMS = [Prompt(id=f"p{i}", prompt=f"prompt {i}") for i in range(7)]


def test_interrupted_stage_recomputes_only_the_missing_shards(tmp_path):
    """7 items in shards of 3: slices [0-2], [3-5], [6]; seeds 5, 5 + 1000003, 5 + 2000006."""
    ref_calls = []
    ref, counts = shards.run_sharded(str(tmp_path / "ref"), ITEMS, 3, _work(ref_calls), Prompt, seed=5)
    assert [c[1] for c in ref_calls] == [5, 1_000_008, 2_000_011]
    assert counts == {"shards": 3, "shards_reused": 0}
    assert [p.id for p in ref] == [p.id for p in ITEMS]

    calls = []
    with pytest.raises(RuntimeError):  # the second shard's worker dies: only shard 0 is on disk
        shards.run_sharded(str(tmp_path / "s"), ITEMS, 3, _work(calls, fail_at=2), Prompt, seed=5)
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["00000.jsonl"]
    calls = []
    rows, counts = shards.run_sharded(str(tmp_path / "s"), ITEMS, 3, _work(calls), Prompt, seed=5)
    assert [c[0] for c in calls] == [("p3", "p4", "p5"), ("p6",)]  # shard 0 was not recomputed
    assert counts == {"shards": 3, "shards_reused": 1}
    assert rows == ref  # resumed == uninterrupted


def test_shard_dir_drops_shards_of_other_keys(tmp_path):
    old = shards.shard_dir(str(tmp_path), "key1")
    store.write_jsonl(store.join(old, "00000.jsonl"), [Prompt(id="a", prompt="x")])
    new = shards.shard_dir(str(tmp_path), "key2")
    assert not Path(old).exists() and new.endswith("/shards/key2")
    assert shards.shard_dir(str(tmp_path), "key2") == new


def test_remove_temporaries_keeps_finished_files(tmp_path):
    store.write_json(str(tmp_path / "done.json"), {"a": 1})
    (tmp_path / ".tmp-123-half.jsonl").write_text('{"id": "a", "pro')
    assert store.remove_temporaries(str(tmp_path)) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["done.json"]
