"""Experiment tracking as a task of the iteration's report: `metareward.reporting.tracking` logs iteration t to
MLflow or W&B (``tracking.backend``), once per destination; a no-op while tracking is off."""

from __future__ import annotations

from prefect import task
from prefect.context import TaskRunContext

from metareward.config import RunConfig
from metareward.reporting import tracking


@task(name="track", tags=["cpu"], retries=2, retry_delay_seconds=10, result_serializer="json",
      task_run_name=lambda: f"track-iter{TaskRunContext.get().parameters['t']}")
def track_iteration(cfg: RunConfig, t: int) -> dict | None:
    """Iteration t's statistics, digests, DPO curves and report to the tracking backend; the marker written."""
    return tracking.log_iteration(cfg, t)
