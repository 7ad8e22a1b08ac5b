"""Model resolution to a folder of this machine: a local folder in place, a hub id through the Hugging Face cache."""

from pathlib import Path

import huggingface_hub
import pytest

from metareward.engines import models


def test_a_local_folder_is_its_own_model_folder(tmp_path):
    (tmp_path / "m0").mkdir()
    (tmp_path / "m0" / "config.json").write_text("{}")
    assert models.model_folder(str(tmp_path / "m0")) == str((tmp_path / "m0").resolve())
    with pytest.raises(models.ModelNotFound, match="no such folder"):
        models.model_folder(str(tmp_path / "none"))


def _fake_hub(monkeypatch, tmp_path, files):
    """snapshot_download over a repo holding ``files``: each call gets the files its ignore patterns let through."""
    import fnmatch

    calls = []

    def snapshot_download(repo_id, ignore_patterns=()):
        calls.append(list(ignore_patterns))
        folder = tmp_path / "hub" / repo_id / str(len(calls))
        for name in files:
            if not any(fnmatch.fnmatch(name, pat) for pat in ignore_patterns):
                (folder / name).parent.mkdir(parents=True, exist_ok=True)
                (folder / name).write_text(name)
        return str(folder)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    return calls


def test_a_hub_id_is_downloaded_without_duplicate_weights(tmp_path, monkeypatch):
    calls = _fake_hub(monkeypatch, tmp_path, ["config.json", "model.safetensors", "pytorch_model.bin",
                                              "original/consolidated.00.pth"])
    folder = Path(models.model_folder("org/model"))
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"] and len(calls) == 1


def test_a_hub_id_without_safetensors_gets_its_bin_weights(tmp_path, monkeypatch):
    calls = _fake_hub(monkeypatch, tmp_path, ["config.json", "pytorch_model.bin"])
    folder = Path(models.model_folder("org/old-model"))
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "pytorch_model.bin"] and len(calls) == 2
