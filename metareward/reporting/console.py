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
    """Units (rows, steps) per second since the bar started.

    Not rich's moving estimate: the engines advance in bursts (two decode batches finishing a second apart after a
    minute of work), and an estimate from the last few updates then read "4345.4/s" for a judge stage that had
    done 192 rows in 71 s."""

    def render(self, task) -> Text:
        elapsed = task.finished_time if task.finished else task.elapsed
        if not elapsed or not task.completed:
            return Text("?/s", style="progress.data.speed")
        return Text(f"{task.completed / elapsed:.1f}/s", style="progress.data.speed")


class RichBars:
    """A `metareward.progress` listener drawing rich bars; a label seen again after it finished starts a new bar.
    Use as a context manager (starts and stops the live display)."""

    def __init__(self, console: Console | None = None, clock=None):
        kwargs = {"get_time": clock} if clock is not None else {}
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), RateColumn(),
                                 TimeElapsedColumn(), TimeRemainingColumn(), console=console or Console(stderr=True),
                                 **kwargs)
        self.tasks: dict[str, int] = {}

    def __call__(self, label: str, done: int, total: int) -> None:
        if total == 0:  # nothing to do (e.g. no judgment left to re-score): no bar reading "0/0"
            return
        task = self.tasks.get(label)
        if task is None or (done == 0 and self.progress.tasks[task].finished):
            task = self.tasks[label] = self.progress.add_task(label, total=total)
        self.progress.update(task, completed=done, total=total)

    def __enter__(self) -> RichBars:
        self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()
