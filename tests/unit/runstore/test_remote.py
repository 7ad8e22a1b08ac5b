"""Model folders between an s3:// run store (a real S3 API: moto's server) and the local cache."""

import json
from pathlib import Path

import fsspec
import pytest

from metareward.runstore import remote, store
from metareward.runstore.layout import RunLayout
from metareward.records import Manifest


def _model(folder: Path) -> Path:
    (folder / "sub").mkdir(parents=True)
    (folder / "config.json").write_text('{"layers": 2}')
    (folder / "model.safetensors").write_bytes(bytes(range(256)) * 40)
    (folder / "sub" / "tokenizer.json").write_text("{}")
    return folder


def test_store_round_trip_on_s3(s3_bucket):
    folder = store.join(s3_bucket, "runs/smoke/iter_1/judge")
    digest = store.write_jsonl(store.join(folder, "rows.jsonl"), [{"a": 1}, {"a": 2}])
    m = Manifest(stage="judge", iteration=1, run="smoke", key="k", uri=folder, files={}, digests={"rows": digest})
    store.write_manifest(m)
    assert store.read_manifest(folder) == m
    assert store.read_text(store.join(folder, "rows.jsonl")) == '{"a": 1}\n{"a": 2}\n'
    # atomic writes leave no temporary object behind
    assert sorted(p.rsplit("/", 1)[1] for p in fsspec.filesystem("s3").find(folder)) == ["manifest.json", "rows.jsonl"]
    store.invalidate(folder)
    assert store.read_manifest(folder) is None


def test_model_output_pushes_on_success_only(s3_bucket, tmp_path):
    uri = store.join(s3_bucket, "run/iter_1/train/model")
    with remote.model_output(uri, str(tmp_path / "cache")) as save_dir:
        assert not remote.is_remote(save_dir)
        _model(Path(save_dir))
        local_digest = store.folder_digest(save_dir)
    assert store.exists(store.join(uri, "sub/tokenizer.json"))
    assert store.folder_digest(uri) == local_digest  # same names and bytes in the store
    assert not list((tmp_path / "cache" / "scratch").iterdir())  # scratch removed

    failed = store.join(s3_bucket, "run/iter_2/train/model")
    with pytest.raises(RuntimeError):
        with remote.model_output(failed, str(tmp_path / "cache")) as save_dir:
            _model(Path(save_dir))
            raise RuntimeError("trainer crashed")
    assert not store.exists(failed)


def test_local_model_pulls_once_by_digest(s3_bucket, tmp_path):
    src = _model(tmp_path / "src")
    uri = store.join(s3_bucket, "run/iter_1/train/model")
    remote.upload_folder(src, uri)
    got = Path(remote.local_model(uri, "abc123", str(tmp_path / "cache")))
    assert got == tmp_path / "cache" / "store" / "abc123"
    assert json.loads((got / "config.json").read_text()) == {"layers": 2}
    assert (got / "model.safetensors").read_bytes() == (src / "model.safetensors").read_bytes()
    # a second call uses the finished copy: the store is not read again
    store.fs_for(uri).rm(uri, recursive=True)  # the store's own instance (its listings cached)
    assert remote.local_model(uri, "abc123", str(tmp_path / "cache")) == str(got)
    with pytest.raises(FileNotFoundError, match="no model files"):
        remote.local_model(uri, "other", str(tmp_path / "cache"))
    assert not any(p.name.startswith("other") for p in (tmp_path / "cache" / "store").iterdir())


def test_folder_digest_is_cached_by_names_sizes_and_mtimes(tmp_path, monkeypatch):
    """An unchanged folder is not read again; a changed, added or renamed file is."""
    import os

    src, cache = _model(tmp_path / "src"), str(tmp_path / "cache")
    reads, real = [], store.file_digest
    monkeypatch.setattr(store, "file_digest", lambda uri: (reads.append(uri), real(uri))[1])
    first = remote.cached_folder_digest(src, cache)
    assert len(reads) == 3 and first == store.folder_digest(str(src))
    reads.clear()
    assert remote.cached_folder_digest(src, cache) == first and reads == []
    assert remote.cached_folder_digest(str(src) + "/.", cache) == first and reads == []  # the same folder

    (src / "model.safetensors").write_bytes(b"retrained")
    changed = remote.cached_folder_digest(src, cache)
    assert len(reads) == 3 and changed == store.folder_digest(str(src)) != first
    st = (src / "config.json").stat()
    os.utime(src / "config.json", ns=(st.st_atime_ns, st.st_mtime_ns + 1))  # touched, same bytes: read again
    reads.clear()
    assert remote.cached_folder_digest(src, cache) == changed and len(reads) == 3
    (src / "sub" / "tokenizer.json").rename(src / "sub" / "vocab.json")
    assert remote.cached_folder_digest(src, cache) == store.folder_digest(str(src)) != changed


def test_folder_files_follow_symlinks_like_folder_digest(tmp_path):
    """A Hugging Face snapshot links its files into a blob folder: listed, uploaded and digested alike."""
    blobs, snap = _model(tmp_path / "blobs"), tmp_path / "snapshot"
    (snap / "sub").mkdir(parents=True)
    for rel in ("config.json", "model.safetensors", "sub/tokenizer.json"):
        (snap / rel).symlink_to(blobs / rel)
    (snap / ".tmp-123-config.json").write_text("partial")  # an interrupted write: never listed
    assert [rel for rel, _ in remote.folder_files(snap)] == ["config.json", "model.safetensors", "sub/tokenizer.json"]
    assert remote.cached_folder_digest(snap, str(tmp_path / "cache")) == store.folder_digest(str(blobs))


def test_store_model_uploads_once_under_its_digest(s3_bucket, tmp_path, monkeypatch):
    src = _model(tmp_path / "src")
    digest = store.folder_digest(str(src))
    uri = remote.store_model(src, RunLayout(f"{s3_bucket}/runs", "r").model(digest))
    assert uri == f"{s3_bucket}/runs/models/{digest}" and store.folder_digest(uri) == digest
    assert store.exists(uri + remote.COMPLETE)
    monkeypatch.setattr(remote, "upload_folder", lambda *a: pytest.fail("uploaded again"))
    assert remote.store_model(src, uri) == uri
    got = Path(remote.local_model(uri, digest, str(tmp_path / "cache")))
    assert store.folder_digest(str(got)) != digest  # the cached copy adds its own marker, nothing else
    assert sorted(p.name for p in got.iterdir()) == [remote.COMPLETE, "config.json", "model.safetensors", "sub"]


def test_local_paths_are_read_in_place(tmp_path):
    assert remote.local_model(str(tmp_path), "d") == str(tmp_path)


def test_local_model_output_appears_whole_or_not_at_all(tmp_path):
    """A save killed half-way leaves nothing under the model's name, and a .tmp- sibling the stage's next attempt
    removes; one that raises leaves nothing; one that returns replaces what an earlier attempt left."""
    stage = tmp_path / "iter_1" / "train"
    target = stage / "model"
    killed = remote.model_output(str(target))
    d = Path(killed.__enter__())  # never exited: the process died inside the save
    assert d.parent == stage and d.name.startswith(".tmp-") and d.is_dir()
    (d / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{")  # a torn header
    assert not target.exists()
    assert store.remove_temporaries(str(stage)) == 1 and list(stage.iterdir()) == []

    with pytest.raises(KeyboardInterrupt):
        with remote.model_output(str(target)) as d:
            _model(Path(d))
            raise KeyboardInterrupt
    assert list(stage.iterdir()) == []

    (target / "old").mkdir(parents=True)
    with remote.model_output(str(target)) as d:
        _model(Path(d))
        digest = store.folder_digest(d)
    assert sorted(p.name for p in target.iterdir()) == ["config.json", "model.safetensors", "sub"]
    assert store.folder_digest(str(target)) == digest  # the digest taken before the rename still holds
    assert [p.name for p in stage.iterdir()] == ["model"]


def test_doctests():
    import doctest

    from metareward.runstore import remote

    result = doctest.testmod(remote)
    assert result.attempted > 0 and result.failed == 0
