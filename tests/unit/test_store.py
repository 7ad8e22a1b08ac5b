import json

import pytest

from metareward import store
from metareward.records import Manifest, Prompt


def test_jsonl_roundtrip_and_digest(tmp_path):
    uri = str(tmp_path / "a" / "rows.jsonl")
    d1 = store.write_jsonl(uri, [Prompt(id="p1", prompt="hi"), Prompt(id="p2", prompt="é")])
    assert store.read_jsonl(uri, Prompt) == [Prompt(id="p1", prompt="hi"), Prompt(id="p2", prompt="é")]
    assert d1 == store.write_jsonl(uri, [Prompt(id="p1", prompt="hi"), Prompt(id="p2", prompt="é")])
    assert not [p for p in (tmp_path / "a").iterdir() if p.name.startswith(".tmp-")]  # no temporaries left


def test_bad_jsonl_line_is_named(tmp_path):
    f = tmp_path / "rows.jsonl"
    f.write_text(json.dumps({"id": "p1", "prompt": "ok"}) + "\n" + json.dumps({"id": "p2"}) + "\n")
    with pytest.raises(store.StoreError, match=r"rows.jsonl: line 2: prompt: Field required"):
        store.read_jsonl(str(f), Prompt)


def test_manifest_is_the_done_marker(tmp_path):
    folder = store.stage_uri(str(tmp_path), "run", 1, "judge")
    assert store.read_manifest(folder) is None
    m = Manifest(stage="judge", iteration=1, run="run", key="k1", uri=folder, digests={"x": "d"})
    store.write_manifest(m)
    assert store.read_manifest(folder) == m
    store.invalidate(folder)
    assert store.read_manifest(folder) is None


def test_manifest_digest_depends_on_key_and_outputs():
    base = dict(stage="s", iteration=1, run="r", uri="u")
    a = Manifest(key="k", digests={"x": "1"}, **base)
    assert a.digest == Manifest(key="k", digests={"x": "1"}, counts={"n": 3}, **base).digest
    assert a.digest != Manifest(key="k", digests={"x": "2"}, **base).digest
    assert a.digest != Manifest(key="k2", digests={"x": "1"}, **base).digest


def test_folder_digest_changes_with_content(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "w.bin").write_bytes(b"abc")
    d = store.folder_digest(str(tmp_path / "m"))
    (tmp_path / "m" / "w.bin").write_bytes(b"abd")
    assert d != store.folder_digest(str(tmp_path / "m"))
