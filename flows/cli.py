"""The ``metareward`` command (the console script): ``run`` and ``resume``, which start the Prefect flows, in front of
the library's own commands (`metareward.cli`: status, report, eval).

    metareward run smoke                       # one iteration on the embedded SmolLM2, CPU
    metareward run smoke dpo.beta=0.2          # recomputes training and what follows
    metareward run my.yaml run.iterations=4
    metareward status smoke                    # iterations x stages, from the manifests
    metareward resume smoke                    # continue a run from its stored config
    metareward report smoke                    # runs/smoke/report/report.html (+ .md, PNGs)
    metareward eval mt-bench --judgments FILE  # score benchmark files as the official harnesses do

``python -m flows ...`` is the same command.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from flows.run import run_pipeline
from metareward import cli as lib
from metareward.config import RunConfig, check_overrides, load_config
from metareward.pipeline.calls import stored_config
from metareward.runstore import store
from metareward.runstore.layout import RunLayout


def _print_summaries(cfg: RunConfig, folder: str) -> None:
    for t in range(1, cfg.run.iterations + 1):
        typer.echo(store.read_text(RunLayout.of(cfg).summary(t, "md")))
    typer.echo(f"run: {folder}")


def run(
    config: Annotated[str, typer.Argument(help="Recipe name (smoke, llama3-8b) or a YAML file.")],
    overrides: Annotated[Optional[list[str]], typer.Argument(help="key=value overrides, e.g. dpo.beta=0.2")] = None,
    bars: Annotated[bool, typer.Option("--progress/--no-progress", help="Progress bars on stderr.")] = True,
) -> None:
    """Run (or continue) a multi-iteration Meta-Rewarding run; finished stages are skipped."""
    check_overrides(overrides or [])  # a setting given twice on the command line: which one was meant?
    cfg = load_config(config, overrides or [])
    run_pipeline(cfg, recipe=Path(config).stem, bars=bars)
    _print_summaries(cfg, RunLayout.of(cfg).run)


def resume(
    run_name: Annotated[str, typer.Argument(metavar="RUN", help="Run name under --root, or the run folder.")],
    root: Annotated[str, typer.Option(help="Store root holding the run.")] = "runs",
    bars: Annotated[bool, typer.Option("--progress/--no-progress", help="Progress bars on stderr.")] = True,
) -> None:
    """Continue a run from its stored config.json; every finished stage is reused."""
    folder = lib.run_dir(run_name, root)
    cfg = stored_config(folder)
    run_pipeline(cfg, bars=bars)
    _print_summaries(cfg, folder)


app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, help=lib.app.info.help)
app.command()(run)
app.command()(resume)
app.registered_commands += lib.app.registered_commands  # status, report
app.registered_groups += lib.app.registered_groups  # eval


def main() -> None:
    lib.main(app)


if __name__ == "__main__":
    main()
