"""A stored run's config is placed where its folder is: a run moved or copied to another folder or bucket prefix is
that folder, whatever storage.root and run.name its config.json recorded; the storage section enters no stage key."""

from __future__ import annotations

import shutil

import pytest

from metareward.config import ConfigError, load_config
from metareward.pipeline import calls, contract
from metareward.registry import STAGES
from metareward.runstore import store
from metareward.runstore.layout import RunLayout


def test_a_moved_runs_config_names_its_new_folder(tmp_path, monkeypatch):
    cfg = load_config("smoke", ["storage.root=runs", "run.name=orig", "dpo.beta=0.2"])
    monkeypatch.chdir(tmp_path)
    calls.save_config(cfg)
    shutil.move(tmp_path / "runs" / "orig", tmp_path / "elsewhere" / "copy")
    monkeypatch.chdir(tmp_path / "elsewhere")
    moved = calls.stored_config(str(tmp_path / "elsewhere" / "copy"))
    assert (moved.storage.root, moved.run.name) == (str(tmp_path / "elsewhere"), "copy")
    assert RunLayout.of(moved).run == str(tmp_path / "elsewhere" / "copy") and moved.dpo.beta == 0.2
    # no stage is re-keyed by the move: the storage section is in no stage's key, the run name in none either
    for stage in STAGES:
        assert contract.stage_key(stage, moved, 1, {"x": "d"}) == contract.stage_key(stage, cfg, 1, {"x": "d"})


def test_a_run_on_another_bucket_prefix(s3_bucket):
    cfg = load_config("smoke", [f"storage.root={s3_bucket}/a", "run.name=r"])
    calls.save_config(cfg)
    store.write_bytes(f"{s3_bucket}/b/r2/config.json", store.read_text(f"{s3_bucket}/a/r/config.json").encode())
    moved = calls.stored_config(f"{s3_bucket}/b/r2")
    assert (moved.storage.root, moved.run.name) == (f"{s3_bucket}/b", "r2")


def test_a_folder_name_that_is_no_run_name_is_one_config_line(tmp_path):
    calls.save_config(load_config("smoke", [f"storage.root={tmp_path}", "run.name=ok"]))
    shutil.move(tmp_path / "ok", tmp_path / "not ok!")
    with pytest.raises(ConfigError, match=r"not ok!/config.json: run.name: "):
        calls.stored_config(str(tmp_path / "not ok!"))
