import pytest

from metareward.config import load_config
from metareward.runstore import store
from metareward.runstore.layout import RunLayout, iteration_of


def test_every_path_of_a_run_under_its_root():
    run = RunLayout("s3://b/runs/", "smoke")
    assert run.run == "s3://b/runs/smoke"
    assert run.config == "s3://b/runs/smoke/config.json"
    assert run.stage(3, "meta_judge") == "s3://b/runs/smoke/iter_3/meta_judge"
    assert run.shards(1, "judge") == "s3://b/runs/smoke/iter_1/judge/shards"
    assert run.health(2) == "s3://b/runs/smoke/iter_2/health.json"
    assert run.summary(1, "json") == "s3://b/runs/smoke/iter_1/summary.json"
    assert run.seed_record == "s3://b/runs/smoke/iter_0/seed_model.json"
    assert (run.report, run.eval_cache, run.results) == (
        "s3://b/runs/smoke/report", "s3://b/runs/smoke/eval_cache", "s3://b/runs/smoke/.prefect-results")
    assert run.model("ab12") == "s3://b/runs/models/ab12"  # beside the runs: every run of the store shares it


def test_a_relative_root_is_the_same_run_from_anywhere(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config("smoke", ["storage.root=runs", "run.name=x"])
    assert RunLayout.of(cfg).run == f"{tmp_path}/runs/x"
    assert RunLayout.at(f"{tmp_path}/runs/x") == RunLayout.of(cfg)
    assert RunLayout.at("x").run == f"{tmp_path}/x"


def test_iterations_are_the_iteration_folders_in_order(tmp_path):
    run = RunLayout(str(tmp_path), "r")
    with pytest.raises(store.StoreError, match="no such run folder"):
        run.iterations()
    for name in ("iter_10", "iter_2", "iter_0", "report", "iter_x"):
        (tmp_path / "r" / name).mkdir(parents=True)
    assert run.iterations() == [0, 2, 10]
    assert [iteration_of(n) for n in ("iter_7", "s3://b/r/iter_7/", "iter_", "xiter_1")] == [7, 7, None, None]


def test_iteration_folders_are_spelled_in_layout_only():
    """Every other module asks the layout; tests spell paths out on purpose (they check the layout itself)."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[3]
    spelled = {str(p.relative_to(root)) for pkg in ("metareward", "flows", "tasks", "bench") for p in
               (root / pkg).rglob("*.py") if re.search(r"iter_[0-9<{]", p.read_text())}
    assert spelled == {"metareward/runstore/layout.py"}


def test_a_folder_that_holds_no_run_is_named(tmp_path):
    with pytest.raises(store.StoreError, match=r"ghost: no such run folder$"):
        RunLayout.at(str(tmp_path / "ghost")).stored()
    (tmp_path / "empty").mkdir()
    with pytest.raises(store.StoreError, match=r"empty/config.json: no such run \(no config.json: not a run folder\)$"):
        RunLayout.at(str(tmp_path / "empty")).stored()
    (tmp_path / "empty" / "config.json").write_text("{}")
    assert RunLayout.at(str(tmp_path / "empty")).stored() == RunLayout(str(tmp_path), "empty")
