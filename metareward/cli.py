"""The ``metareward`` command.

    metareward run smoke                       # one iteration on the embedded SmolLM2, CPU
    metareward run smoke dpo.beta=0.2          # recomputes training and what follows
    metareward run my.yaml run.iterations=4
    metareward status smoke                    # iterations x stages, from the manifests
    metareward resume smoke                    # continue a run from its stored config
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


def run_pipeline(cfg: RunConfig) -> list[dict]:
    """Store the config, then run the multi-iteration flow (Prefect, server or ephemeral)."""
    _quiet_env(cfg)
    root = store.run_uri(cfg.storage.root, cfg.run.name)
    store.write_json(store.join(root, "config.json"), cfg.model_dump(mode="json"))
    from prefect.filesystems import LocalFileSystem  # noqa: F401  (fail early if prefect is broken)

    from flows.meta_rewarding import meta_rewarding

    from flows.stages import result_storage

    # Prefect's cache records live beside the data they describe (a folder, or the s3:// store)
    return meta_rewarding.with_options(result_storage=result_storage(cfg))(cfg)


def _print_summaries(summaries: list[dict], root: str) -> None:
    from metareward.summary import to_markdown

    for s in summaries:
        typer.echo(to_markdown(s))
    typer.echo(f"run: {root}")


@app.command()
def run(
    config: Annotated[str, typer.Argument(help="Recipe name (smoke, llama3-8b) or a YAML file.")],
    overrides: Annotated[Optional[list[str]], typer.Argument(help="key=value overrides, e.g. dpo.beta=0.2")] = None,
) -> None:
    """Run (or continue) a multi-iteration Meta-Rewarding run; finished stages are skipped."""
    cfg = load_config(config, overrides or [])
    summaries = run_pipeline(cfg)
    _print_summaries(summaries, store.run_uri(cfg.storage.root, cfg.run.name))


@app.command()
def resume(
    run_name: Annotated[str, typer.Argument(metavar="RUN", help="Run name under --root, or the run folder.")],
    root: Annotated[str, typer.Option(help="Store root holding the run.")] = "runs",
) -> None:
    """Continue a run from its stored config.json; every finished stage is reused."""
    folder = _run_dir(run_name, root)
    uri = store.join(folder, "config.json")
    if not store.exists(uri):
        raise typer.BadParameter(f"{uri}: no such run (no config.json)")
    cfg = config_from_dict(store.read_json(uri), uri)
    summaries = run_pipeline(cfg)
    _print_summaries(summaries, folder)


@app.command()
def status(
    run_name: Annotated[str, typer.Argument(metavar="RUN", help="Run name under --root, or the run folder.")],
    root: Annotated[str, typer.Option(help="Store root holding the run.")] = "runs",
) -> None:
    """A table of iterations x stages: done or not, counts, seconds."""
    from rich.console import Console
    from rich.table import Table

    folder = _run_dir(run_name, root)
    uri = store.join(folder, "config.json")
    if not store.exists(uri):
        raise typer.BadParameter(f"{uri}: no such run (no config.json)")
    cfg = config_from_dict(store.read_json(uri), uri)
    table = Table(title=f"run {cfg.run.name} ({folder})")
    for col in ("iter", "stage", "state", "counts", "seconds"):
        table.add_column(col)
    for t in range(0, cfg.run.iterations + 1):
        for stage in STAGES if t else ("prompt_pool", "eft", "benchmark"):
            m = store.read_manifest(store.join(folder, f"iter_{t}", stage))
            counts = ", ".join(f"{k}={v}" for k, v in list(m.counts.items())[:4]) if m else ""
            table.add_row(str(t), stage, "done" if m else "-", counts, f"{m.duration_s:.1f}" if m else "")
    Console(width=160).print(table)


from metareward.evals.cli import app as _eval_app  # noqa: E402  (typer and the scorers only; no torch)

app.add_typer(_eval_app, name="eval")


def main() -> None:
    from metareward.config import ConfigError
    from metareward.evals.io import EvalFileError
    from metareward.evals.judges import JudgeError
    from metareward.models import ModelNotFound
    from metareward.prompt_sets import PromptFileError
    from metareward.stages import StageError

    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("metareward").setLevel(logging.INFO)
    debug = "--debug" in sys.argv
    if debug:
        sys.argv.remove("--debug")
    try:
        app()
    except (ConfigError, PromptFileError, store.StoreError, ModelNotFound, StageError, EvalFileError, JudgeError) as e:
        if debug:
            raise
        typer.echo(f"error: {e}", err=True)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
