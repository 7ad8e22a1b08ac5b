"""The library's commands of ``metareward``: the ones that read a run store or score files, without Prefect.

    metareward status smoke                    # iterations x stages, from the manifests
    metareward report smoke                    # runs/smoke/report/report.html (+ .md, PNGs)
    metareward eval mt-bench --judgments FILE  # score benchmark files as the official harnesses do
    metareward export smoke exported/smoke     # the run's pairs, judgments, verdicts as a HF dataset
    metareward export smoke exported/m --model # M_t (the last trained) as a HF model with its card

``run`` and ``resume`` start the Prefect flows, so they live above the library, in flows/cli.py: the installed
``metareward`` command is `flows.cli.main` (this app's commands plus those two). ``python -m metareward`` runs
this app alone; ``python -m flows`` is the whole command.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from metareward.runstore import store
from metareward.runstore.layout import RunLayout
from metareward.registry import BOOTSTRAP, ITERATION, STAGES

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Meta-Rewarding: actor, judge and meta-judge.")

def run_dir(run: str, root: str) -> str:
    """A run given by name (under --root) or by its folder/URI."""
    if "://" in run:
        return run.rstrip("/")
    if os.sep in run or Path(run, "config.json").is_file():
        return str(Path(run).resolve())
    return RunLayout(root, run).run


def run_bounds(folder: str) -> str:
    """``folder``, after applying its run's storage.timeout_s and outage_s (`store.configure`) when it holds a
    readable config.json; the defaults stay otherwise (the command itself says what is wrong with the folder)."""
    from metareward.config import ConfigError
    from metareward.pipeline.calls import stored_config

    if store.exists(RunLayout.at(folder).config):
        with contextlib.suppress(ConfigError):
            stored_config(folder)
    return folder


@app.command()
def status(
    run_name: Annotated[str, typer.Argument(metavar="RUN", help="Run name under --root, or the run folder.")],
    root: Annotated[str, typer.Option(help="Store root holding the run.")] = "runs",
) -> None:
    """A table of iterations x stages: state, counts and seconds.

    From the manifests in the run store: done (manifest written, its files whole), damaged (a file it lists is
    missing or altered: `resume` recomputes the stage; the counts column names the file), partial (folder started,
    no manifest: running or crashed), - (not started)."""
    from rich.console import Console
    from rich.table import Table

    from metareward.runstore import integrity

    folder = run_dir(run_name, root)
    from metareward.pipeline.calls import stored_config

    cfg = stored_config(folder)
    table = Table(title=f"run {cfg.run.name} ({folder})")
    for col in ("iter", "stage", "state", "counts", "seconds"):
        table.add_column(col)
    run = RunLayout.at(folder)
    for t in range(0, cfg.run.iterations + 1):
        for stage in ITERATION if t else (*BOOTSTRAP, "benchmark"):
            m = store.read_manifest(run.stage(t, stage))
            wrong = integrity.problems(m, cfg.storage.model_cache) if m else []
            counts = ", ".join(f"{k}={v}" for k, v in list(m.counts.items())[:4]) if m else ""
            state = "damaged" if wrong else "done" if m else "partial" if store.exists(run.stage(t, stage)) else "-"
            table.add_row(str(t), stage, state, integrity.describe(wrong) if wrong else counts,
                          f"{m.duration_s:.1f}" if m else "")
    Console(width=160).print(table)


@app.command()
def stage(
    name: Annotated[str, typer.Argument(metavar="STAGE", help="The stage: " + ", ".join(STAGES) + ".")],
    run_name: Annotated[str, typer.Argument(metavar="RUN", help="Run name under --root, or the run folder/URI.")],
    t: Annotated[int, typer.Option("--iter", help="The iteration (0: the seed-model stages).")] = 1,
    root: Annotated[str, typer.Option(help="Store root holding the run.")] = "runs",
    replica: Annotated[Optional[int], typer.Option(help="Compute only this replica's shards (0-based).")] = None,
    replicas: Annotated[int, typer.Option(help="How many replicas share the stage's shards.")] = 1,
    merge: Annotated[bool, typer.Option("--merge", help="Only read the replicas' shards and write the manifest.")] = False,
    key: Annotated[Optional[str], typer.Option(help="Refuse to run unless the stage key is this one.")] = None,
    progress_lines: Annotated[bool, typer.Option("--progress-lines", hidden=True)] = False,
) -> None:
    """Run one stage of a stored run, in this process, from the manifests in the run store.

    What every stage process runs (a local replica, a deployment run in a container): `metareward stage judge
    smoke --iter 1 --replica 0 --replicas 2` computes replica 0's shards of iteration 1's judge stage, then
    `--merge` writes its manifest. Without --replica the whole stage runs and writes its manifest."""
    from metareward.pipeline import calls, gpu_slots
    from metareward.pipeline.contract import StageError, launching
    from metareward.runstore.shards import Part

    cfg = calls.stored_config(run_dir(run_name, root))
    calls.check_ready(cfg, name, t)  # an unknown stage or a missing input: one line, before any log or write
    try:
        mode = "merge" if merge else Part(replica, replicas) if replica is not None else None
    except ValueError as e:
        raise StageError(f"{name} --replica/--replicas: {e}") from None
    logging.getLogger("metareward").info("%s iter %d: stage process %d (%s)", name, t, os.getpid(),
                                         "merge" if merge else f"replica {replica} of {replicas}"
                                         if replica is not None else "whole stage")
    gpu_slots.claim_from_env(cfg.engine.tensor_parallel_size)  # a shared host: its own GPUs, before any engine
    with _progress_lines(progress_lines), launching(None, expected_key=key):
        m = calls.run(cfg, name, t, mode)
    typer.echo(f"{name} iter {t}: " + (f"manifest {m.uri}" if m else f"replica {replica} of {replicas} committed"))


@contextlib.contextmanager
def _progress_lines(on: bool):
    """Progress as JSON lines on stdout, for the process that started this one (`metareward.pipeline.fanout`)."""
    if not on:
        yield
        return
    import json

    from metareward import progress
    from metareward.pipeline.fanout import PROGRESS_PREFIX

    def emit(label: str, done: int, total: int) -> None:
        print(PROGRESS_PREFIX + json.dumps({"label": label, "done": done, "total": total}), flush=True)

    with progress.listening(emit):
        yield


@app.command()
def report(
    run_name: Annotated[str, typer.Argument(metavar="RUN", help="Run name under --root, or the run folder.")],
    root: Annotated[str, typer.Option(help="Store root holding the run.")] = "runs",
) -> None:
    """Write the run's HTML and Markdown report with the paper's plots.

    Into <run>/report/: report.html (self-contained, PNGs embedded), report.md and the PNGs (judge score density
    per iteration, response lengths, benchmarks, judge agreement, meta-judge position and score bias)."""
    from metareward.reporting.report import write_report

    folder = run_bounds(run_dir(run_name, root))
    for name, uri in write_report(folder).items():
        typer.echo(f"{name}: {uri}")


@app.command()
def export(
    run_name: Annotated[str, typer.Argument(metavar="RUN", help="Run name under --root, or the run folder.")],
    dest: Annotated[str, typer.Argument(metavar="DEST", help="The dataset folder (with --model: model folder) to write.")],
    root: Annotated[str, typer.Option(help="Store root holding the run.")] = "runs",
    model: Annotated[bool, typer.Option("--model", help="Export the model M_t with a model card instead.")] = False,
    t: Annotated[Optional[int], typer.Option("--iter", min=1, help="With --model: M_t of this iteration "
                                             "(default: the last whose train stage finished).")] = None,
    dataset_repo: Annotated[Optional[str], typer.Option(
        "--dataset-repo", metavar="REPO", help="With --model: the Hub dataset of the run's pairs, for the card.")] = None,
    push_to_hub: Annotated[Optional[str], typer.Option(
        "--push-to-hub", metavar="REPO", help="Also upload DEST as Hub dataset (with --model: model) REPO "
        "(token: HF_TOKEN).")] = None,
) -> None:
    """Every iteration's actor and judge pairs, judgments and meta-verdicts as a Hugging Face dataset; with --model,
    M_t as a Hugging Face model.

    One config per kind (actor_pairs, judge_pairs, judgments, meta_verdicts), one split per iteration (iter1, ...),
    Parquet files and a dataset card (README.md) with the Hub's YAML header. With --model: M_t's files copied as
    the train stage saved them (digest checked) and a model card (README.md)."""
    from metareward.reporting import export as exporter

    if not model and (t is not None or dataset_repo):
        raise typer.BadParameter("--iter and --dataset-repo go with --model")
    folder = run_bounds(run_dir(run_name, root))
    if model:
        out = exporter.export_model(folder, dest, t, dataset_repo)
        typer.echo(f"M_{out['iteration']}: {out['files']} files, digest {out['digest']}")
    else:
        header = exporter.export_run(folder, dest)
        for info in header["dataset_info"]:
            sizes = ", ".join(f"{s['name']} {s['num_examples']}" for s in info["splits"])
            typer.echo(f"{info['config_name']}: {sizes}")
    typer.echo(f"card: {os.path.join(dest, 'README.md')}")
    if push_to_hub:
        typer.echo(f"pushed: {exporter.push(dest, push_to_hub, repo_type='model' if model else 'dataset')}")


from metareward.evals.cli import app as _eval_app  # noqa: E402  (typer and the scorers only; no torch)

app.add_typer(_eval_app, name="eval")


def main(cli: typer.Typer | None = None) -> None:
    """Run ``cli`` (this module's app when None) with one-line errors (exit code 2) for bad input; ``--debug``
    anywhere on the command line shows the traceback instead."""
    from metareward.config import ConfigError
    from metareward.evals.io import EvalFileError
    from metareward.evals.judges import JudgeError
    from metareward.engines.models import ModelNotFound
    from metareward.inputs.prompt_sets import PromptFileError
    from metareward.pipeline.contract import StageError
    from pydantic import ValidationError
    import yaml

    from metareward.runstore import redact

    redact.install()  # secret env values are masked in every log line (Prefect's included)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("metareward").setLevel(logging.INFO)
    debug = "--debug" in sys.argv
    if debug:
        sys.argv.remove("--debug")
        logging.getLogger("metareward").setLevel(logging.DEBUG)  # the store's retries, among others
    one_line = (ConfigError, PromptFileError, store.StoreError, ModelNotFound, StageError, EvalFileError, JudgeError,
                OSError, ValidationError, yaml.YAMLError)
    if not debug:
        _no_tracebacks_in_logs(one_line)
    try:
        (cli or app)()
    except one_line as e:
        if debug:
            raise
        typer.echo(f"error: {redact.redact(_one_line(e))}", err=True)
        raise SystemExit(2) from None
    except (KeyboardInterrupt, SystemExit) as e:
        # typer turns Ctrl-C into a silent exit 130
        if isinstance(e, SystemExit) and e.code != 130:
            raise
        typer.echo("interrupted: finished stages are kept; `metareward resume RUN` continues", err=True)
        raise SystemExit(130) from None


def _no_tracebacks_in_logs(kinds: tuple[type[BaseException], ...]) -> None:
    """Log records (Prefect's "Task run failed with exception") keep their message but not the traceback of an
    error that ends as one line (``kinds``); `--debug` keeps them."""
    make = logging.getLogRecordFactory()

    def factory(*args, **kwargs):
        record = make(*args, **kwargs)
        if record.exc_info and isinstance(record.exc_info[1], kinds):
            record.exc_info = record.exc_text = None
        return record

    logging.setLogRecordFactory(factory)


def _one_line(e: BaseException) -> str:
    """The message as one line (an OSError names its file; a multi-line message keeps its first line)."""
    from pydantic import ValidationError

    if isinstance(e, ValidationError):  # a record of the run store that a check upstream let through
        text = f"{e.title}: {store.first_error(e, '(top level)')}"
    elif isinstance(e, OSError) and e.filename:
        text = f"{e.filename}: {e.strerror}"
    else:
        text = str(e)
    return text.strip().splitlines()[0] if text.strip() else type(e).__name__


if __name__ == "__main__":
    main()
