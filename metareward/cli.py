"""The ``metareward`` command.

    metareward run smoke                       # one iteration on the embedded SmolLM2, CPU
    metareward run smoke dpo.beta=0.2          # recomputes training and what follows
    metareward run my.yaml run.iterations=4
    metareward status smoke                    # iterations x stages, from the manifests
    metareward resume smoke                    # continue a run from its stored config
    metareward report smoke                    # runs/smoke/report/report.html (+ .md, PNGs)
    metareward eval mt-bench --judgments FILE  # score benchmark files as the official harnesses do
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from metareward import store
from metareward.config import RunConfig, config_from_dict, load_config

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Meta-Rewarding: actor, judge and meta-judge.")

STAGES = ("prompts", "generate", "judge", "meta_judge", "pairs", "train", "benchmark")

# No network at run time: no hub downloads, no telemetry, no analytics.
OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "TOKENIZERS_PARALLELISM": "false",
    "PREFECT_LOGGING_EXTRA_LOGGERS": "metareward",
    # Prefect waits 20 s for its ephemeral API (the server-less mode of `make run`) and then fails the run; on a
    # slow 2-core host its start-up took 20.5 s, and one bench run timed out. Waiting longer costs nothing.
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
}


def _quiet_env(cfg: RunConfig) -> None:
    for k, v in OFFLINE_ENV.items():
        os.environ.setdefault(k, v)
    named = [cfg.model.path, cfg.prompts.dataset, cfg.prompt_pool.model_path]
    if any(p is not None and not Path(p).expanduser().exists() for p in named):
        os.environ["HF_HUB_OFFLINE"] = "0"  # the user named a hub id: downloading is their choice


def _run_dir(run: str, root: str) -> str:
    """A run given by name (under --root) or by its folder/URI."""
    if "://" in run:
        return run.rstrip("/")
    if os.sep in run or Path(run, "config.json").is_file():
        return str(Path(run).resolve())
    return store.run_uri(root, run)


def run_pipeline(cfg: RunConfig, recipe: str | None = None, bars: bool = False) -> list[dict]:
    """Check the input files, store the config, then run the multi-iteration flow (Prefect, server or ephemeral).
    The flow and task runs are tagged ``run:<name>`` and ``recipe:<recipe>``; ``bars``: rich progress bars on
    stderr."""
    from metareward import preflight, redact

    preflight.check(cfg)  # bad input fails here, before the store is touched or Prefect starts
    redact.install()
    _quiet_env(cfg)
    root = store.run_uri(cfg.storage.root, cfg.run.name)
    from metareward.redact import redact_obj

    store.write_json(store.join(root, "config.json"), redact_obj(cfg.model_dump(mode="json")))
    from prefect.filesystems import LocalFileSystem  # noqa: F401  (fail early if prefect is broken)

    from flows.meta_rewarding import meta_rewarding

    from flows.stages import result_storage

    # Prefect's cache records live beside the data they describe (a folder, or the s3:// store)
    flow = meta_rewarding.with_options(result_storage=result_storage(cfg))
    from contextlib import ExitStack

    from prefect import tags

    with ExitStack() as stack:
        stack.enter_context(tags(f"run:{cfg.run.name}", *([f"recipe:{recipe}"] if recipe else [])))
        if bars:
            from metareward import progress
            from metareward.console import RichBars

            stack.enter_context(progress.listening(stack.enter_context(RichBars())))
        return flow(cfg)


def _print_summaries(summaries: list[dict], root: str) -> None:
    from metareward.summary import to_markdown

    for s in summaries:
        typer.echo(to_markdown(s))
    typer.echo(f"run: {root}")


@app.command()
def run(
    config: Annotated[str, typer.Argument(help="Recipe name (smoke, llama3-8b) or a YAML file.")],
    overrides: Annotated[Optional[list[str]], typer.Argument(help="key=value overrides, e.g. dpo.beta=0.2")] = None,
    bars: Annotated[bool, typer.Option("--progress/--no-progress", help="Progress bars on stderr.")] = True,
) -> None:
    """Run (or continue) a multi-iteration Meta-Rewarding run; finished stages are skipped."""
    cfg = load_config(config, overrides or [])
    summaries = run_pipeline(cfg, recipe=Path(config).stem, bars=bars)
    _print_summaries(summaries, store.run_uri(cfg.storage.root, cfg.run.name))


@app.command()
def resume(
    run_name: Annotated[str, typer.Argument(metavar="RUN", help="Run name under --root, or the run folder.")],
    root: Annotated[str, typer.Option(help="Store root holding the run.")] = "runs",
    bars: Annotated[bool, typer.Option("--progress/--no-progress", help="Progress bars on stderr.")] = True,
) -> None:
    """Continue a run from its stored config.json; every finished stage is reused."""
    folder = _run_dir(run_name, root)
    uri = store.join(folder, "config.json")
    if not store.exists(uri):
        raise store.StoreError(f"{uri}: no such run (no config.json)")
    cfg = config_from_dict(store.read_json(uri), uri)
    summaries = run_pipeline(cfg, bars=bars)
    _print_summaries(summaries, folder)


@app.command()
def status(
    run_name: Annotated[str, typer.Argument(metavar="RUN", help="Run name under --root, or the run folder.")],
    root: Annotated[str, typer.Option(help="Store root holding the run.")] = "runs",
) -> None:
    """A table of iterations x stages: state, counts and seconds.

    From the manifests in the run store: done (manifest written), partial (folder started, no manifest: running
    or crashed), - (not started)."""
    from rich.console import Console
    from rich.table import Table

    folder = _run_dir(run_name, root)
    uri = store.join(folder, "config.json")
    if not store.exists(uri):
        raise store.StoreError(f"{uri}: no such run (no config.json)")
    cfg = config_from_dict(store.read_json(uri), uri)
    table = Table(title=f"run {cfg.run.name} ({folder})")
    for col in ("iter", "stage", "state", "counts", "seconds"):
        table.add_column(col)
    for t in range(0, cfg.run.iterations + 1):
        for stage in STAGES if t else ("prompt_pool", "eft", "benchmark"):
            m = store.read_manifest(store.join(folder, f"iter_{t}", stage))
            counts = ", ".join(f"{k}={v}" for k, v in list(m.counts.items())[:4]) if m else ""
            state = "done" if m else "partial" if store.exists(store.join(folder, f"iter_{t}", stage)) else "-"
            table.add_row(str(t), stage, state, counts, f"{m.duration_s:.1f}" if m else "")
    Console(width=160).print(table)


@app.command()
def report(
    run_name: Annotated[str, typer.Argument(metavar="RUN", help="Run name under --root, or the run folder.")],
    root: Annotated[str, typer.Option(help="Store root holding the run.")] = "runs",
) -> None:
    """Write the run's HTML and Markdown report with the paper's plots.

    Into <run>/report/: report.html (self-contained, PNGs embedded), report.md and the PNGs (judge score density
    per iteration, response lengths, benchmarks, judge agreement, meta-judge position and score bias)."""
    from metareward.report import write_report

    folder = _run_dir(run_name, root)
    for name, uri in write_report(folder).items():
        typer.echo(f"{name}: {uri}")


from metareward.evals.cli import app as _eval_app  # noqa: E402  (typer and the scorers only; no torch)

app.add_typer(_eval_app, name="eval")


def main() -> None:
    from metareward.config import ConfigError
    from metareward.evals.io import EvalFileError
    from metareward.evals.judges import JudgeError
    from metareward.models import ModelNotFound
    from metareward.prompt_sets import PromptFileError
    from metareward.stages import StageError

    from metareward import redact

    redact.install()  # secret env values are masked in every log line (Prefect's included)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("metareward").setLevel(logging.INFO)
    debug = "--debug" in sys.argv
    if debug:
        sys.argv.remove("--debug")
    try:
        app()
    except (ConfigError, PromptFileError, store.StoreError, ModelNotFound, StageError, EvalFileError, JudgeError,
            OSError) as e:
        if debug:
            raise
        typer.echo(f"error: {redact.redact(_one_line(e))}", err=True)
        raise SystemExit(2) from None


def _one_line(e: BaseException) -> str:
    """The message as one line (an OSError names its file; a multi-line message keeps its first line)."""
    text = str(e) if not isinstance(e, OSError) or not e.filename else f"{e.filename}: {e.strerror}"
    return text.strip().splitlines()[0] if text.strip() else type(e).__name__


if __name__ == "__main__":
    main()
