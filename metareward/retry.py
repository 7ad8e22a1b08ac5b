"""The library's one retry mechanism, and the one place that says which failures are retried.

Retried with exponential backoff and jitter; anything else is raised at once:

- **run store** (`metareward.runstore.store.retrying`, every read, write, list and delete): `network_fault`, a
  dropped or refused connection, a timeout, an S3 endpoint restarting, an I/O error of a flaky mount; never a
  missing file, a denied permission, a full disk or unreadable content. Bounded by time, not by a count
  (`retry_until`): 0.5 s doubling to 8 s, +-25%, for as long as another attempt, lasting as long as the longest
  failed one (at least ``storage.timeout_s``), still ends within ``storage.outage_s`` of the operation's start;
  the client libraries' own retries are off (`metareward.runstore.store.fs_for`), so each request of an attempt
  waits at most that timeout.
- **OpenAI-compatible judge** (`metareward.evals.judges.OpenAIJudge`, each request, `retry`): `http_fault`, HTTP
  408, 429 and 5xx, a connection or timeout error, a reply that is not JSON; never another 4xx (a bad key or
  request). ``max_retries`` retries, ``retry_sleep_s`` doubling.

Above these, Prefect retries a whole stage task (``execution.retries``), except for bad input, a failed health
gate, an out-of-memory or a store outage that already used its time, which would fail the same way again
(`tasks.stages.retry_worthwhile`).

    >>> calls = []
    >>> def flaky():
    ...     calls.append(1)
    ...     if len(calls) < 3:
    ...         raise ConnectionResetError("reset by peer")
    ...     return "ok"
    >>> retry(flaky, attempts=5, first_delay_s=0, transient=network_fault), len(calls)
    ('ok', 3)
    >>> network_fault(FileNotFoundError("runs/x.json")), network_fault(TimeoutError())
    (False, True)

A deadline instead of a count: attempts of at most 2 s, failing at once, with 1 s doubling sleeps inside 10 s
sleep 1, 2 and 4 s (at 7 s a fourth sleep of 8 s leaves no time for an attempt):

    >>> clock = FakeClock()
    >>> retry_until(clock.fail, deadline_s=10, attempt_s=2, first_delay_s=1, transient=network_fault,
    ...             clock=clock.now, sleep=clock.sleep)
    Traceback (most recent call last):
    TimeoutError: attempt 4
    >>> clock.slept, clock.t
    ([1.0, 2.0, 4.0], 7.0)
"""

from __future__ import annotations

import errno
import json
import random
import time
import urllib.error
from collections.abc import Callable
from typing import TypeVar

R = TypeVar("R")

_TRANSIENT_ERRNOS = {errno.EIO, errno.EAGAIN, errno.ETIMEDOUT, errno.ECONNRESET, errno.ECONNREFUSED,
                     errno.ECONNABORTED, errno.EHOSTUNREACH, errno.ENETUNREACH, errno.ENETDOWN, errno.EPIPE}
# botocore / aiohttp / s3fs classes, matched by name so this module imports none of them
_TRANSIENT_NAMES = {"EndpointConnectionError", "ConnectTimeoutError", "ReadTimeoutError", "ConnectionClosedError",
                    "HTTPClientError", "ClientConnectorError", "ClientOSError", "ServerDisconnectedError",
                    "ClientPayloadError", "FSTimeoutError", "IncompleteRead", "ProxyConnectionError"}
RETRIED_HTTP_STATUS = {408, 429}  # and every 5xx


def retry(fn: Callable[[], R], *, attempts: int, first_delay_s: float, transient: Callable[[BaseException], bool],
          max_delay_s: float | None = None, jitter: float = 0.0,
          on_retry: Callable[[BaseException, int, float], None] | None = None) -> R:
    """``fn()``, called again after a failure ``transient`` accepts, ``attempts`` calls at most. The sleeps are
    ``first_delay_s``, then twice the last (at most ``max_delay_s``), each scaled by a random factor in
    1 +- ``jitter``; ``on_retry(error, attempt, delay)`` runs before each. The last failure, and any failure that
    is not transient, is raised as it is (the caller names it)."""
    delay = first_delay_s
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except Exception as e:  # noqa: BLE001  (classified by `transient`)
            if attempt == attempts or not transient(e):
                raise
            if on_retry is not None:
                on_retry(e, attempt, delay)
            time.sleep(delay * (1 - jitter + 2 * jitter * random.random()))
            delay = delay * 2 if max_delay_s is None else min(delay * 2, max_delay_s)
    raise AssertionError("unreachable")


def retry_until(fn: Callable[[], R], *, deadline_s: float, attempt_s: float, first_delay_s: float,
                transient: Callable[[BaseException], bool], max_delay_s: float | None = None, jitter: float = 0.0,
                on_retry: Callable[[BaseException, int, float], None] | None = None,
                clock: Callable[[], float] | None = None, sleep: Callable[[float], None] | None = None) -> R:
    """``fn()``, called again after a failure ``transient`` accepts while the next call, started after its sleep,
    would still end within ``deadline_s`` of the first call's start if it lasted as long as the longest failed
    call so far, or ``attempt_s`` (one request's timeout: a call may make several). Sleeps as in `retry`;
    ``on_retry(error, attempt, delay)`` runs before each. The last failure, and any failure that is not
    transient, is raised as it is (the caller names it)."""
    clock, sleep = clock or time.monotonic, sleep or time.sleep
    start, delay, attempt, longest = clock(), first_delay_s, 0, attempt_s
    while True:
        attempt += 1
        began = clock()
        try:
            return fn()
        except Exception as e:  # noqa: BLE001  (classified by `transient`)
            now = clock()
            longest = max(longest, now - began)
            pause = delay * (1 - jitter + 2 * jitter * random.random())
            if not transient(e) or now + pause + longest > start + deadline_s:
                raise
            if on_retry is not None:
                on_retry(e, attempt, pause)
            sleep(pause)
            delay = delay * 2 if max_delay_s is None else min(delay * 2, max_delay_s)


class FakeClock:
    """A clock for `retry_until`'s examples and tests: ``fail`` raises TimeoutError after ``attempt_s`` seconds of
    fake time (0 unless given), ``sleep`` only moves the time."""

    def __init__(self, attempt_s: float = 0.0):
        self.t, self.slept, self.calls, self.attempt_s = 0.0, [], 0, attempt_s

    def now(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        self.slept.append(s)
        self.t += s

    def fail(self):
        self.calls += 1
        self.t += self.attempt_s
        raise TimeoutError(f"attempt {self.calls}")


def network_fault(e: BaseException) -> bool:
    """Network or endpoint trouble, worth another try; not a missing file, a denied permission or a full disk."""
    if isinstance(e, (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, FileExistsError)):
        return False
    if isinstance(e, (ConnectionError, TimeoutError)) or any(c.__name__ in _TRANSIENT_NAMES for c in type(e).__mro__):
        return True
    if isinstance(e, OSError) and e.errno in _TRANSIENT_ERRNOS:
        return True
    cause = e.__cause__ or e.__context__
    return cause is not None and cause is not e and network_fault(cause)


def http_fault(e: BaseException) -> bool:
    """A failed HTTP request worth another try: 408, 429 or 5xx, no connection, a timeout, a reply not JSON."""
    if isinstance(e, urllib.error.HTTPError):
        return e.code in RETRIED_HTTP_STATUS or e.code >= 500
    return isinstance(e, (urllib.error.URLError, TimeoutError, json.JSONDecodeError))
