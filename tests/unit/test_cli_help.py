"""Every command documents itself; `status` shows stage states; `report` writes the report; the progress bars."""

import typer
from rich.console import Console
from typer.testing import CliRunner

from metareward.runstore import store
from flows.cli import app
from metareward.config import load_config
from metareward.reporting.console import RichBars
from metareward.records import Manifest
from metareward.runstore.layout import RunLayout

runner = CliRunner()


def _commands(group, path=()):
    """(path, click command) for every command and sub-command."""
    for name, cmd in group.commands.items():
        yield path + (name,), cmd
        if hasattr(cmd, "commands"):
            yield from _commands(cmd, path + (name,))


def test_every_command_has_help():
    root = typer.main.get_command(app)
    found = dict(_commands(root))
    assert {("run",), ("resume",), ("status",), ("report",), ("eval",), ("eval", "mt-bench")} <= set(found)
    r = runner.invoke(app, ["--help"])
    assert r.exit_code == 0 and "Meta-Rewarding" in r.output
    for path, cmd in found.items():
        r = runner.invoke(app, [*path, "--help"])
        assert r.exit_code == 0, (path, r.output)
        first = (cmd.help or "").strip().splitlines()[0]
        assert len(first) > 20, path  # a sentence, not a placeholder
        assert first.split()[0] in r.output, path


def test_status_shows_done_partial_and_missing(tmp_path):
    cfg = load_config("smoke", [f"storage.root={tmp_path}", "run.name=st"])
    run = RunLayout(str(tmp_path), "st").run
    store.write_json(store.join(run, "config.json"), cfg.model_dump(mode="json"))
    folder = store.join(run, "iter_1", "generate")
    store.write_manifest(Manifest(stage="generate", iteration=1, run="st", key="k", uri=folder,
                                  counts={"prompts": 16, "responses": 64}, duration_s=12.34))
    store.write_bytes(store.join(run, "iter_1", "judge", "judgments.jsonl"), b"")  # started, no manifest
    r = runner.invoke(app, ["status", "st", "--root", str(tmp_path)])
    assert r.exit_code == 0, r.output
    rows = {line.split("│")[2].strip(): line for line in r.output.splitlines() if line.count("│") >= 5
            and line.split("│")[1].strip() == "1"}
    assert "done" in rows["generate"] and "responses=64" in rows["generate"] and "12.3" in rows["generate"]
    assert "partial" in rows["judge"] and rows["train"].split("│")[3].strip() == "-"


def test_rich_bars_follow_the_trackers():
    from metareward import progress

    console = Console(record=True, width=120, force_terminal=False)
    with RichBars(console) as bars, progress.listening(bars), progress.stage("judge iter 1"):
        bar = progress.tracker(10, "generate")
        bar.advance(4)
        bar.advance(6)
        again = progress.tracker(3, "generate")  # the same label once more: a new bar
        again.advance(1)
    tasks = bars.progress.tasks
    assert [(t.description, t.completed, t.total) for t in tasks] == [
        ("judge iter 1: generate", 10, 10), ("judge iter 1: generate", 1, 3)]
    assert "10/10" in console.export_text()
