"""The CLI's error path: bad input is one line on stderr and exit code 2, no traceback."""

import subprocess
import sys

import pytest


def _run(*args, cwd):
    return subprocess.run([sys.executable, "-m", "flows", *args], capture_output=True, text=True, cwd=cwd)


def test_bad_override_is_one_line(tmp_path):
    p = _run("run", "smoke", "dpo.betta=0.2", cwd=tmp_path)
    assert p.returncode == 2
    assert p.stderr.strip() == "error: recipe smoke + overrides: dpo.betta: unknown key; did you mean 'beta'?"
    assert not (tmp_path / "runs").exists()


def test_unknown_recipe(tmp_path):
    p = _run("run", "nope", cwd=tmp_path)
    assert p.returncode == 2 and "unknown recipe 'nope'" in p.stderr and "Traceback" not in p.stderr


def test_status_of_missing_run(tmp_path):
    p = _run("status", "ghost", "--root", str(tmp_path), cwd=tmp_path)
    assert p.returncode != 0 and "no such run" in p.stderr


def test_prefect_reads_our_ephemeral_start_up_timeout(monkeypatch):
    # A misspelt name would leave Prefect's 20 s, which a slow 2-core host exceeded (the run then fails).
    from prefect.settings import Settings

    from flows.run import OFFLINE_ENV

    key = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"
    monkeypatch.setenv(key, OFFLINE_ENV[key])
    assert Settings().server.ephemeral.startup_timeout_seconds == 120


def test_the_metareward_command_is_the_flows_cli():
    """The console script is flows/cli.py's app (run and resume start Prefect, so they live above the library);
    its commands are the library's plus those two, in the order the help lists them."""
    from importlib.metadata import entry_points

    import typer

    from flows.cli import app
    from metareward import cli as lib

    [script] = [e for e in entry_points(group="console_scripts") if e.name == "metareward"]
    assert script.value == "flows.cli:main"
    names = list(typer.main.get_command(app).commands)
    assert names == ["run", "resume", "status", "stage", "report", "export", "eval"]
    assert list(typer.main.get_command(lib.app).commands) == ["status", "stage", "report", "export", "eval"]


def test_export_of_missing_run(tmp_path):
    p = _run("export", "ghost", str(tmp_path / "out"), "--root", str(tmp_path), cwd=tmp_path)
    assert p.returncode == 2 and "no such run folder" in p.stderr and "Traceback" not in p.stderr


def _listing(folder):
    return sorted((str(p.relative_to(folder)), p.read_bytes() if p.is_file() else None) for p in folder.rglob("*"))


@pytest.mark.parametrize("args", [["status"], ["report"], ["resume"], ["export", "OUT"], ["export", "OUT", "--model"]])
def test_a_folder_that_is_not_a_run_is_one_line_and_untouched(tmp_path, args):
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "iter_1").mkdir()  # looks like a run, holds no config.json
    for folder in ("empty", "notes"):
        before = _listing(tmp_path)
        argv = [a.replace("OUT", str(tmp_path / "out")) for a in args]
        p = _run(argv[0], str(tmp_path / folder), *argv[1:], cwd=tmp_path)
        assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
        assert p.stderr.splitlines() == [f"error: {tmp_path / folder}/config.json: no such run (no config.json"
                                         + (": not a run folder)" if argv[0] in ("report", "export") else ")")]
        assert _listing(tmp_path) == before  # nothing written: no report, no runs/ store, no export


def _states(table: str, stage: str) -> list[str]:
    """The state column of ``stage``'s rows in `metareward status`'s table."""
    rows = [[c.strip() for c in line.split("│")] for line in table.splitlines() if line.startswith("│")]
    return [r[3] for r in rows if r[2] == stage]


def test_status_shows_a_damaged_stage_and_report_refuses_it(tmp_path):
    from metareward.config import load_config
    from metareward.pipeline import calls, contract
    from metareward.records import Prompt

    cfg = load_config("smoke", [f"storage.root={tmp_path}", "run.name=r"])
    calls.save_config(cfg)

    def compute(folder):
        out = contract.Output()
        contract.write_rows(out, folder, "pairs", [Prompt(id="p1", prompt="a")])
        return out

    contract.execute("pairs", cfg, 1, {"responses": "d"}, compute)
    p = _run("status", str(tmp_path / "r"), cwd=tmp_path)
    assert p.returncode == 0 and _states(p.stdout, "pairs") == ["done"]
    (tmp_path / "r" / "iter_1" / "pairs" / "pairs.jsonl").unlink()
    p = _run("status", str(tmp_path / "r"), cwd=tmp_path)
    assert p.returncode == 0 and _states(p.stdout, "pairs") == ["damaged"]
    assert "pairs/pairs.jsonl:missing" in p.stdout.replace("\n", "").replace("│", "").replace(" ", "")
    p = _run("report", str(tmp_path / "r"), cwd=tmp_path)
    assert p.returncode == 2 and p.stderr.splitlines() == [
        f"error: pairs iter 1: damaged: {tmp_path}/r/iter_1/pairs/pairs.jsonl: missing; "
        "`metareward resume` recomputes it"]
    assert not (tmp_path / "r" / "report").exists()
    # a manifest of the wrong shape: one line naming the file and the field, for status and report alike
    manifest = tmp_path / "r" / "iter_1" / "pairs" / "manifest.json"
    manifest.write_text("{}")
    for cmd in ("status", "report"):
        p = _run(cmd, str(tmp_path / "r"), cwd=tmp_path)
        assert p.returncode == 2 and p.stderr.splitlines() == [f"error: {manifest}: stage: Field required"], p.stderr
