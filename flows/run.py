"""The pipeline runner behind ``metareward run`` and ``metareward resume``: check the inputs, store the config, run
the multi-iteration flow. It lives here, above the library, because it starts Prefect; `metareward.cli` holds the
commands that need no Prefect.

Prefect and the flows are imported inside `run_pipeline`, after the input checks: a bad input fails fast.
"""

from __future__ import annotations

import os
from pathlib import Path

from metareward.config import RunConfig
from metareward.runstore import store
from metareward.runstore.layout import RunLayout

# No network at run time: no hub downloads, no telemetry, no analytics.
OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "TOKENIZERS_PARALLELISM": "false",
    "PREFECT_LOGGING_EXTRA_LOGGERS": "metareward",
    # Prefect waits 20 s for its ephemeral API (the server-less mode of `make run`), then fails the run; slow hosts
    # took longer (bench/README.md). Waiting longer costs nothing.
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
}


def quiet_env(cfg: RunConfig) -> None:
    for k, v in OFFLINE_ENV.items():
        os.environ.setdefault(k, v)
    named = [cfg.model.path, cfg.prompts.dataset, cfg.prompt_pool.model_path]
    if any(p is not None and not Path(p).expanduser().exists() for p in named):
        os.environ["HF_HUB_OFFLINE"] = "0"  # the user named a hub id: downloading is their choice


def run_pipeline(cfg: RunConfig, recipe: str | None = None, bars: bool = False) -> list[dict]:
    """Check the input files, store the config, then run the multi-iteration flow (Prefect, server or ephemeral);
    returns the iterations' summaries. The flow and task runs are tagged ``run:<name>`` and ``recipe:<recipe>``;
    ``bars``: rich progress bars on stderr."""
    from metareward.pipeline import preflight
    from metareward.runstore import redact

    store.configure(cfg.storage)  # the run's store timeouts and outage bound, before anything touches the store
    preflight.check(cfg)  # bad input fails here, before the store is touched or Prefect starts
    redact.install()
    quiet_env(cfg)
    from metareward.pipeline.calls import save_config

    save_config(cfg)
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
            from metareward.reporting.console import RichBars

            stack.enter_context(progress.listening(stack.enter_context(RichBars())))
        flow(cfg)
    run = RunLayout.of(cfg)
    return [store.read_json(run.summary(t, "json")) for t in range(1, cfg.run.iterations + 1)]
