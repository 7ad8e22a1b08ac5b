"""Progress of long stages for whoever listens: the CLI's rich bars, a Prefect progress artifact, a test.

Engines and the trainer count what they finish through a `Tracker`; they know nothing about who listens.
A listener is a callable ``(label, done, total)`` added for a block of code with `listening`; `stage` names
the stage the work belongs to, so a label reads like ``"judge iter 1: generate"``. Without a listener a
tracker does nothing but add integers, so it is cheap enough for every batch loop.

    >>> seen = []
    >>> with listening(lambda label, done, total: seen.append((label, done, total))), stage("judge iter 1"):
    ...     bar = tracker(5, "score")
    ...     bar.advance(2); bar.advance(9)
    >>> seen
    [('judge iter 1: score', 0, 5), ('judge iter 1: score', 2, 5), ('judge iter 1: score', 5, 5)]

The listeners live in context variables, so they follow the code into Prefect tasks (which copy the context)
and never leak from one block, thread or test into another.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

log = logging.getLogger("metareward")

Listener = Callable[[str, int, int], None]
_listeners: ContextVar[tuple[Listener, ...]] = ContextVar("metareward_progress_listeners", default=())
_stage: ContextVar[str] = ContextVar("metareward_progress_stage", default="")


@contextmanager
def listening(listener: Listener) -> Iterator[None]:
    """Call ``listener(label, done, total)`` for every tracker made inside the block."""
    token = _listeners.set(_listeners.get() + (listener,))
    try:
        yield
    finally:
        _listeners.reset(token)


@contextmanager
def stage(label: str) -> Iterator[None]:
    """Name the stage that trackers made inside the block belong to."""
    token = _stage.set(label)
    try:
        yield
    finally:
        _stage.reset(token)


def relay(label: str, done: int, total: int) -> None:
    """Pass on a progress event that another process reported (a stage process's bar) to this block's listeners."""
    for fn in _listeners.get():
        try:
            fn(label, done, total)
        except Exception as e:  # noqa: BLE001
            log.debug("progress listener failed: %s", e)


class Tracker:
    """``total`` units of work (rows, steps); `advance` as they finish. A listener that raises is logged, not
    propagated: progress never breaks a stage."""

    def __init__(self, total: int, what: str):
        where = _stage.get()
        self.label = f"{where}: {what}" if where else what
        self.total, self.done = max(0, int(total)), 0
        self._listeners = _listeners.get()
        self._emit()

    def advance(self, n: int = 1) -> None:
        if self._listeners:
            self.done = min(self.total, self.done + n)
            self._emit()

    def _emit(self) -> None:
        for fn in self._listeners:
            try:
                fn(self.label, self.done, self.total)
            except Exception as e:  # noqa: BLE001
                log.debug("progress listener failed: %s", e)


def tracker(total: int, what: str) -> Tracker:
    return Tracker(total, what)
