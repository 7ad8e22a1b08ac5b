"""The CLI's error path: bad input is one line on stderr and exit code 2, no traceback."""

import subprocess
import sys


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
