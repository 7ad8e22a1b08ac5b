"""A finished run moved or copied elsewhere (another folder, another s3 prefix) is that folder: `resume FOLDER` from
any directory recomputes nothing; a copy with files deleted or altered shows those stages damaged, gets no report,
and `resume` recomputes exactly those stages, after which the copy's outputs equal the original's. The original is
moved away first, so nothing can be read from it. (Fake engine, stand-in DPO.)"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from metareward.runstore import store


def _overrides(root, seed_model: Path) -> list[str]:
    return [f"storage.root={root}", "engine.backend=fake", "execution.stage_process=inline", f"model.path={seed_model}",
            "run.name=orig", "run.iterations=2", "pairs.judge_pairs=[true, false]", "execution.retries=0",
            "eval.mt_bench.enabled=false", "eval.alpaca_eval.enabled=false"]


def _seed_model(tmp_path: Path) -> Path:
    folder = tmp_path / "seed-model"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "fake"}')
    return folder


def _invoke(*args: str) -> None:
    from flows.cli import app

    result = CliRunner().invoke(app, [*args, "--no-progress"])
    assert result.exit_code == 0, (result.output, result.exception)


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """The library's commands (no Prefect), as a user runs them: one line on stderr for an error."""
    return subprocess.run([sys.executable, "-m", "flows", *args], capture_output=True, text=True, cwd=cwd)


def _manifests(run: Path) -> dict[str, object]:
    return {str(p.parent.relative_to(run)): store.read_manifest(str(p.parent)) for p in run.rglob("manifest.json")}


def _mtimes(run: Path) -> dict[str, int]:
    return {str(p.parent.relative_to(run)): p.stat().st_mtime_ns for p in run.rglob("manifest.json")}


def _states(table: str) -> dict[tuple[str, str], str]:
    rows = [[c.strip() for c in line.split("│")] for line in table.splitlines() if line.startswith("│")]
    return {(r[1], r[2]): r[3] for r in rows if r[1]}


@pytest.mark.slow
def test_a_moved_run_resumes_in_place_and_a_damaged_copy_recomputes_exactly_its_damage(
        tmp_path, prefect_harness, fake_trainer, monkeypatch):
    seed = _seed_model(tmp_path)
    _invoke("run", "smoke", *_overrides(tmp_path / "a", seed))
    trained = len(fake_trainer)

    # moved to another folder, resumed by folder from another directory: nothing recomputed, nothing trained
    moved = tmp_path / "b" / "moved"
    moved.parent.mkdir()
    shutil.move(tmp_path / "a" / "orig", moved)
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    before = _mtimes(moved)
    _invoke("resume", str(moved))
    assert _mtimes(moved) == before and len(fake_trainer) == trained
    assert list(elsewhere.iterdir()) == [] and not (tmp_path / "a" / "orig").exists()  # no ./runs/<name>
    stored = store.read_json(str(moved / "config.json"))
    assert (stored["storage"]["root"], stored["run"]["name"]) == (str(moved.parent), "moved")

    # a copy, with the original moved away; two data files deleted and one altered
    copy = tmp_path / "c" / "copy"
    shutil.copytree(moved, copy)
    original = tmp_path / "original"
    shutil.move(moved, original)
    (copy / "iter_1" / "judge" / "judgments.jsonl").unlink()
    (copy / "iter_2" / "generate" / "responses.jsonl").unlink()
    verdicts = copy / "iter_1" / "meta_judge" / "verdicts.jsonl"
    verdicts.write_text(verdicts.read_text().replace("}", " }", 1))  # still JSON, other bytes

    p = _cli("status", str(copy), cwd=elsewhere)
    assert p.returncode == 0, p.stderr
    damaged = {k for k, v in _states(p.stdout).items() if v == "damaged"}
    assert damaged == {("1", "judge"), ("1", "meta_judge"), ("2", "generate")}, p.stdout
    finished = {tuple(where.removeprefix("iter_").split("/")) for where in _manifests(copy)}
    assert {v for k, v in _states(p.stdout).items() if k in finished - damaged} == {"done"}
    p = _cli("report", str(copy), cwd=elsewhere)
    assert p.returncode == 2 and len(p.stderr.splitlines()) == 1 and "Traceback" not in p.stderr
    assert p.stderr.startswith("error: generate iter 2: damaged: ") or " iter 1: damaged: " in p.stderr, p.stderr

    before = _mtimes(copy)
    _invoke("resume", str(copy))
    after = _mtimes(copy)
    assert sorted(k for k in after if after[k] != before[k]) == ["iter_1/judge", "iter_1/meta_judge",
                                                                  "iter_2/generate"]
    assert len(fake_trainer) == trained  # the recomputed stages gave the same bytes: nothing downstream re-keyed
    ref, got = _manifests(original), _manifests(copy)
    assert sorted(got) == sorted(ref)
    for where, m in ref.items():
        assert (got[where].key, got[where].digests, got[where].uri) == (m.key, m.digests, str(copy / where)), where
        for name, uri in got[where].files.items():
            assert uri.startswith(f"{copy}/"), (where, name, uri)
            if Path(uri).is_file():
                assert Path(uri).read_bytes() == Path(m.files[name]).read_bytes(), (where, name)
    assert _cli("report", str(copy), cwd=elsewhere).returncode == 0


@pytest.mark.slow
def test_a_run_moved_to_another_bucket_prefix_resumes_without_recomputing(
        tmp_path, s3_bucket, prefect_harness, fake_trainer, monkeypatch):
    """Only the run's own objects are copied (not <root>/models/): M_0 is imported again into the new root."""
    import fsspec

    fs = fsspec.filesystem("s3")
    _invoke("run", "smoke", *_overrides(f"{s3_bucket}/first", _seed_model(tmp_path)),
            f"storage.model_cache={tmp_path / 'cache'}")
    trained = len(fake_trainer)
    fs.copy(f"{s3_bucket}/first/orig", f"{s3_bucket}/second/moved", recursive=True)
    fs.rm(f"{s3_bucket}/first", recursive=True)
    fs.invalidate_cache()
    run = f"{s3_bucket}/second/moved"
    before = {p: fs.info(p)["LastModified"] for p in fs.find(run) if p.endswith("manifest.json")}
    monkeypatch.chdir(tmp_path)
    _invoke("resume", run)
    fs.invalidate_cache()
    assert {p: fs.info(p)["LastModified"] for p in fs.find(run) if p.endswith("manifest.json")} == before
    assert len(fake_trainer) == trained and not fs.exists(f"{s3_bucket}/first")
    record = store.read_json(f"{run}/iter_0/seed_model.json")["model"]
    assert fs.exists(f"{s3_bucket}/second/{record['uri']}.complete")  # M_0 under the new root
