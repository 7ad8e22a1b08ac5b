"""Terminal progress bars (rich) for the stages' trackers: one bar per label, with count, rate, elapsed and ETA.

    with progress.listening(RichBars()) as ...:   # what `metareward run` does around the flow
        ...

    judge iter 1: generate  ━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━  192/192  41.3/s  0:00:04  0:00:00
"""

from __future__ import annotations

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, ProgressColumn, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)
from rich.text import Text


class RateColumn(ProgressColumn):
    """Units (rows, steps) per second, from rich's moving estimate."""

    def render(self, task) -> Text:
        speed = task.finished_speed or task.speed
        return Text("?/s" if speed is None else f"{speed:.1f}/s", style="progress.data.speed")


class RichBars:
    """A `metareward.progress` listener drawing rich bars; a label seen again after it finished starts a new bar.
    Use as a context manager (starts and stops the live display)."""

    def __init__(self, console: Console | None = None):
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), RateColumn(),
                                 TimeElapsedColumn(), TimeRemainingColumn(), console=console or Console(stderr=True))
        self.tasks: dict[str, int] = {}

    def __call__(self, label: str, done: int, total: int) -> None:
        task = self.tasks.get(label)
        if task is None or (done == 0 and self.progress.tasks[task].finished):
            task = self.tasks[label] = self.progress.add_task(label, total=total)
        self.progress.update(task, completed=done, total=total)

    def __enter__(self) -> RichBars:
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()
