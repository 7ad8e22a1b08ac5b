"""A stage's files against its manifest: a missing or altered file is found and named; a model folder is checked by
its file names and sizes, and on a local store by its digest, remembered so a large model is read once."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from metareward.records import Manifest, Prompt
from metareward.runstore import integrity, remote, store


def _stage(folder: Path, cache: Path) -> Manifest:
    """A train-like stage as `execute` writes it: a JSONL file, a model folder, a log without a keyed digest."""
    rows = store.write_jsonl(str(folder / "rows.jsonl"), [Prompt(id="p1", prompt="hi")])
    (folder / "model" / "sub").mkdir(parents=True)
    (folder / "model" / "w.bin").write_bytes(b"12345")
    (folder / "model" / "sub" / "t.json").write_text("{}")
    store.write_json(str(folder / "log.json"), [{"loss": 0.5}])
    files = {"rows": str(folder / "rows.jsonl"), "model": str(folder / "model"), "log": str(folder / "log.json")}
    digests = {"rows": rows, "model": store.folder_digest(str(folder / "model"))}
    checks, sizes = integrity.seal(files, digests, str(cache))
    m = Manifest(stage="train", iteration=2, run="r", key="k", uri=str(folder), files=files, digests=digests,
                 checks=checks, sizes=sizes)
    store.write_manifest(m)
    return m


def test_seal_records_what_a_check_needs(tmp_path):
    m = _stage(tmp_path / "s", tmp_path / "cache")
    # the log is not keyed on, its content digest is still checked: `[{"loss": 0.5}]` as write_json writes it
    log = b'[\n  {\n    "loss": 0.5\n  }\n]\n'
    assert (tmp_path / "s" / "log.json").read_bytes() == log
    import hashlib

    assert m.checks == {"log": hashlib.sha256(log).hexdigest()[:16]}
    assert m.sizes == {"model": {"sub/t.json": 2, "w.bin": 5}}
    assert integrity.problems(store.read_manifest(str(tmp_path / "s")), str(tmp_path / "cache")) == []


def test_a_missing_or_altered_file_is_named(tmp_path):
    cache = str(tmp_path / "cache")
    m = _stage(tmp_path / "s", tmp_path / "cache")
    (tmp_path / "s" / "rows.jsonl").unlink()
    (tmp_path / "s" / "log.json").write_text('[{"loss": 0.4}]\n')
    wrong = integrity.problems(m, cache)
    assert wrong[0] == f"{tmp_path}/s/log.json: content does not match its manifest (digest " \
        f"{store.file_digest(str(tmp_path / 's' / 'log.json'))}, recorded {m.checks['log']})"
    assert wrong[1:] == [f"{tmp_path}/s/rows.jsonl: missing"]
    with pytest.raises(integrity.DamagedStage, match=r"^train iter 2: damaged: .*/s/log.json: content does not "
                                                     r"match .* \(and 1 more\); `metareward resume` recomputes it$"):
        integrity.checked(str(tmp_path / "s"), cache)


@pytest.mark.parametrize("damage,expected", [
    (lambda d: (d / "sub" / "t.json").unlink(), "model/sub/t.json: missing"),
    (lambda d: (d / "w.bin").write_bytes(b"1234"), "model/w.bin: 4 bytes, the manifest records 5"),
    (lambda d: (d / "extra.bin").write_bytes(b"x"), "model/extra.bin: not in the manifest (an extra file)"),
    # same names and sizes: a local store's check digests the folder (its mtimes changed, so the memo misses)
    (lambda d: (d / "w.bin").write_bytes(b"12346"), "model: content does not match its manifest"),
])
def test_a_damaged_model_folder_is_named(tmp_path, damage, expected):
    m = _stage(tmp_path / "s", tmp_path / "cache")
    damage(tmp_path / "s" / "model")
    [wrong] = integrity.problems(m, str(tmp_path / "cache"))
    assert wrong.startswith(f"{tmp_path}/s/{expected}")


def test_an_emptied_or_replaced_model_folder_is_damaged(tmp_path):
    m = _stage(tmp_path / "s", tmp_path / "cache")
    for p in sorted((tmp_path / "s" / "model").rglob("*"), reverse=True):
        p.rmdir() if p.is_dir() else p.unlink()
    assert integrity.problems(m, None) == [f"{tmp_path}/s/model: missing (an empty folder)"]
    (tmp_path / "s" / "model").rmdir()
    (tmp_path / "s" / "model").write_text("not a folder")
    assert integrity.problems(m, None) == [f"{tmp_path}/s/model: a file, where the manifest records a folder"]


def test_a_local_model_is_read_once_its_digest_remembered(tmp_path, monkeypatch):
    """`seal` remembers the digest the stage computed; checks then read the model's metadata only, until a file's
    mtime changes (a copied run: read once more, then remembered again)."""
    m = _stage(tmp_path / "s", tmp_path / "cache")
    reads = []
    real = store.folder_digest
    monkeypatch.setattr(store, "folder_digest", lambda uri: (reads.append(uri), real(uri))[1])
    for _ in range(3):
        assert integrity.problems(m, str(tmp_path / "cache")) == []
    assert reads == []
    w = tmp_path / "s" / "model" / "w.bin"
    os.utime(w, ns=(w.stat().st_atime_ns, w.stat().st_mtime_ns + 1_000_000_000))
    assert integrity.problems(m, str(tmp_path / "cache")) == [] and reads == [str((tmp_path / "s" / "model"))]
    assert integrity.problems(m, str(tmp_path / "cache")) == [] and len(reads) == 1


def test_a_file_is_digested_once_per_process_while_unchanged(tmp_path, monkeypatch):
    m = _stage(tmp_path / "s", tmp_path / "cache")
    reads = []
    real = store.file_digest
    monkeypatch.setattr(store, "file_digest", lambda uri: (reads.append(uri), real(uri))[1])
    integrity.problems(m, str(tmp_path / "cache"))
    integrity.problems(m, str(tmp_path / "cache"))
    assert reads == [str(tmp_path / "s" / "rows.jsonl")]  # the log's digest is remembered from `seal`
    store.write_jsonl(str(tmp_path / "s" / "rows.jsonl"), [Prompt(id="p1", prompt="ho")])  # rewritten: read again
    assert integrity.problems(m, str(tmp_path / "cache"))[0].startswith(f"{tmp_path}/s/rows.jsonl: content does not")
    assert len(reads) == 2


def test_an_earlier_versions_outputs_without_digest_or_sizes_need_only_be_there(tmp_path):
    folder = tmp_path / "s"
    (folder / "model").mkdir(parents=True)
    (folder / "model" / "w.bin").write_bytes(b"1")
    (folder / "log.json").write_text("[]")
    m = Manifest(stage="train", iteration=1, run="r", key="k", uri=str(folder),
                 files={"model": str(folder / "model"), "log": str(folder / "log.json")})
    assert integrity.problems(m) == []
    (folder / "log.json").unlink()
    assert integrity.problems(m) == [f"{folder}/log.json: missing"]


def test_on_s3_a_model_folder_is_checked_by_names_and_sizes(tmp_path, s3_bucket):
    """No download for a check: a deleted or resized file is found, a same-size edit is not (a local store's digest
    check finds that one)."""
    local = tmp_path / "m"
    local.mkdir()
    (local / "w.bin").write_bytes(b"12345")
    (local / "config.json").write_text("{}")
    folder = f"{s3_bucket}/run/iter_1/train"
    remote.upload_folder(local, f"{folder}/model")
    files, digests = {"model": f"{folder}/model"}, {"model": store.folder_digest(str(local))}
    checks, sizes = integrity.seal(files, digests)
    assert checks == {} and sizes == {"model": {"config.json": 2, "w.bin": 5}}
    m = Manifest(stage="train", iteration=1, run="run", key="k", uri=folder, files=files, digests=digests, sizes=sizes)
    assert integrity.problems(m) == []
    store.write_bytes(f"{folder}/model/w.bin", b"12346")
    assert integrity.problems(m) == []
    store.write_bytes(f"{folder}/model/w.bin", b"123")
    assert integrity.problems(m) == [f"{folder}/model/w.bin: 3 bytes, the manifest records 5"]
    store.remove(f"{folder}/model/config.json")
    assert integrity.problems(m) == [f"{folder}/model/config.json: missing"]


def test_doctests():
    import doctest

    result = doctest.testmod(integrity)
    assert result.attempted > 0 and result.failed == 0
