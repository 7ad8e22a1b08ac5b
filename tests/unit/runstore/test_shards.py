"""Shards: a stage's work list is committed slice by slice; an interrupted stage recomputes only what is missing."""

from pathlib import Path

import pytest

from metareward.runstore import shards, store
from metareward.records import Prompt


def _work(calls, fail_at=None):
    def work(chunk, seeds):
        calls.append((tuple(p.id for p in chunk), tuple(seeds)))
        if fail_at is not None and len(calls) == fail_at:
            raise RuntimeError("worker lost")
        return [Prompt(id=p.id, prompt=f"{p.prompt} / seed {s}") for p, s in zip(chunk, seeds)]
    return work


ITEMS = [Prompt(id=f"p{i}", prompt=f"prompt {i}") for i in range(7)]


def test_interrupted_stage_recomputes_only_the_missing_shards(tmp_path):
    """7 items in shards of 3: slices [0-2], [3-5], [6]; base 100, 2 samples per item: item i's seed 100 + 2i."""
    ref_calls = []
    ref, counts = shards.run_sharded(str(tmp_path / "ref"), ITEMS, 3, _work(ref_calls), Prompt, base=100, samples=2)
    assert [c[1] for c in ref_calls] == [(100, 102, 104), (106, 108, 110), (112,)]
    assert counts == {"shards": 3, "shards_reused": 0}
    assert [p.id for p in ref] == [p.id for p in ITEMS]

    calls = []
    with pytest.raises(RuntimeError):  # the second shard's worker dies: only shard 0 is on disk
        shards.run_sharded(str(tmp_path / "s"), ITEMS, 3, _work(calls, fail_at=2), Prompt, base=100, samples=2)
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["00000.jsonl"]
    calls = []
    rows, counts = shards.run_sharded(str(tmp_path / "s"), ITEMS, 3, _work(calls), Prompt, base=100, samples=2)
    assert [c[0] for c in calls] == [("p3", "p4", "p5"), ("p6",)]  # shard 0 was not recomputed
    assert counts == {"shards": 3, "shards_reused": 1}
    assert rows == ref  # resumed == uninterrupted


def test_replicas_compute_their_own_shards_and_the_merge_reads_them(tmp_path):
    """7 items in shards of 2 -> shards 0..3; replica 0 of 2 owns 0 and 2, replica 1 owns 1 and 3. Each row is
    the same as one process computes, whoever computed it."""
    ref, _ = shards.run_sharded(str(tmp_path / "ref"), ITEMS, 2, _work([]), Prompt, base=0, samples=3)
    folder = str(tmp_path / "fan")
    owned = {}
    for r in (1, 0):
        calls = []
        with shards.computing(shards.Part(r, 2)), pytest.raises(shards.PartDone):
            shards.run_sharded(folder, ITEMS, 2, _work(calls), Prompt, base=0, samples=3)
        owned[r] = [c[0] for c in calls]
    assert owned == {0: [("p0", "p1"), ("p4", "p5")], 1: [("p2", "p3"), ("p6",)]}
    calls = []
    with shards.computing("merge"):
        rows, counts = shards.run_sharded(folder, ITEMS, 2, _work(calls), Prompt, base=0, samples=3)
    assert calls == [] and rows == ref and counts == {"shards": 4, "shards_reused": 4}


def test_the_merge_names_the_shards_no_replica_committed(tmp_path):
    folder = str(tmp_path / "fan")
    with shards.computing(shards.Part(0, 2)), pytest.raises(shards.PartDone):
        shards.run_sharded(folder, ITEMS, 2, _work([]), Prompt, base=0)
    with shards.computing("merge"), pytest.raises(shards.ShardsMissing, match=r"shards \[1, 3\] of 4"):
        shards.run_sharded(folder, ITEMS, 2, _work([]), Prompt, base=0)


def test_shards_are_handed_to_the_runner_together_and_committed_as_they_end(tmp_path):
    """A runner that finishes the jobs in reverse order (as an engine scheduling them at once may): each shard is
    committed when it ends, and the rows still come back in item order."""
    seen = []

    def backwards(jobs):
        seen.append(len(jobs))
        for k in reversed(range(len(jobs))):
            yield k, jobs[k]()

    rows, _ = shards.run_sharded(str(tmp_path / "t"), ITEMS, 3, _work([]), Prompt, base=0, together=backwards)
    assert seen == [3] and [p.id for p in rows] == [p.id for p in ITEMS]


def test_seed_bases_differ_by_stage_and_iteration_and_stay_below_2_to_the_62():
    bases = {shards.seed_base(0, s, t) for s in ("generate", "judge", "meta_judge") for t in (1, 2)}
    assert len(bases) == 6
    assert all(b % shards.SEED_SPACE == 0 and b < 2 ** 62 for b in bases)
    with pytest.raises(ValueError, match="seed space"):
        shards.item_seeds(0, shards.SEED_SPACE, 1, 1)


def test_shard_dir_drops_shards_of_other_keys(tmp_path):
    old = shards.shard_dir(str(tmp_path), "key1")
    store.write_jsonl(store.join(old, "00000.jsonl"), [Prompt(id="a", prompt="x")])
    new = shards.shard_dir(str(tmp_path), "key2")
    assert not Path(old).exists() and new == f"{tmp_path}/key2"
    assert shards.shard_dir(str(tmp_path), "key2") == new


def test_remove_temporaries_keeps_finished_files(tmp_path):
    store.write_json(str(tmp_path / "done.json"), {"a": 1})
    (tmp_path / ".tmp-123-half.jsonl").write_text('{"id": "a", "pro')
    assert store.remove_temporaries(str(tmp_path)) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["done.json"]
