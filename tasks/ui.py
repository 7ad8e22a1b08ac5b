"""What the Prefect UI shows of a run, beyond flow and task runs: artifacts.

- after each iteration, the `report` task writes ``<run>/report/`` (HTML, Markdown, PNGs; metareward.reporting.report)
  and publishes the iteration as a markdown artifact (key ``<run>-iter<t>``) and one table artifact per table
  (key ``<run>-iter<t>-<table>``), with links to the store URIs;
- during long stages, `progress_artifacts` turns the engines' and trainer's trackers (metareward.progress)
  into progress artifacts (key ``<run>-iter<t>-<stage>-progress``), updated at most every few seconds.

Artifact keys may hold only lowercase letters, digits and dashes: `artifact_key` folds anything else.
"""

from __future__ import annotations

import re
import time
from contextlib import contextmanager

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, create_table_artifact
from prefect.artifacts import update_progress_artifact
from prefect.context import TaskRunContext

from metareward import progress
from metareward.reporting import report
from metareward.runstore.layout import RunLayout
from metareward.config import RunConfig


def artifact_key(*parts) -> str:
    """``artifact_key("My_Run.v2", "iter1")`` -> ``"my-run-v2-iter1"``."""
    key = re.sub(r"[^a-z0-9-]+", "-", "-".join(str(p) for p in parts).lower())
    return re.sub(r"-{2,}", "-", key).strip("-")


def _table_slug(title: str) -> str:
    return artifact_key(title.split(":", 1)[-1])


@task(name="report", tags=["cpu"], result_serializer="json",
      task_run_name=lambda: f"report-iter{TaskRunContext.get().parameters['t']}")
def publish_iteration(cfg: RunConfig, t: int) -> dict[str, str]:
    """Write the run report into the store and publish iteration t's tables as artifacts; name -> URI."""
    run = RunLayout.of(cfg)
    rep = report.load_run(run.run, upto=t)  # a later iteration's stages are checked when it is resumed
    uris = report.write_report(run.run, rep)
    links = {"report (HTML)": uris["report.html"], "report (Markdown)": uris["report.md"],
             "summary": run.summary(t, "md"),
             **{f"{s} stage": m.uri for s, m in rep.iterations[t].manifests.items()}}
    key = artifact_key(cfg.run.name, f"iter{t}")
    create_markdown_artifact(report.iteration_markdown(rep, t, links), key=key,
                             description=f"Meta-Rewarding run {cfg.run.name}, iteration {t}")
    for tab in report.iteration_tables(rep.iterations[t], rep):
        create_table_artifact(tab.as_dicts(), key=artifact_key(key, _table_slug(tab.title)), description=tab.title)
    return uris


class _ProgressArtifacts:
    """A listener: one progress artifact per tracker label, created on first sight, then updated when at least
    ``every_s`` seconds passed or the work is done."""

    def __init__(self, key: str, every_s: float):
        self.key, self.every_s = key, every_s
        self.ids: dict[str, tuple] = {}  # label -> (artifact id, last update time)

    def __call__(self, label: str, done: int, total: int) -> None:
        pct = 100.0 * done / total if total else 100.0
        desc = f"{label}: {done} / {total}"
        now = time.monotonic()
        if label not in self.ids:
            what = label.rsplit(": ", 1)[-1]
            self.ids[label] = (create_progress_artifact(pct, key=artifact_key(self.key, what, "progress"),
                                                        description=desc), now)
        elif now - self.ids[label][1] >= self.every_s or done >= total:
            update_progress_artifact(self.ids[label][0], pct, description=desc)
            self.ids[label] = (self.ids[label][0], now)


@contextmanager
def progress_artifacts(cfg: RunConfig, t: int, stage: str, every_s: float = 5.0):
    """Progress artifacts for the trackers of one stage (its engine batches, its training steps)."""
    with progress.listening(_ProgressArtifacts(artifact_key(cfg.run.name, f"iter{t}", stage), every_s)):
        yield
