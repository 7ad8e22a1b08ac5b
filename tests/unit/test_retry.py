"""The one retry mechanism: backoff, what is retried, what is raised."""

import doctest
import io
import json
import urllib.error

import pytest

from metareward import retry


def test_doctests():
    result = doctest.testmod(retry)
    assert result.attempted > 0 and result.failed == 0


def _failing(errors):
    calls = []

    def fn():
        calls.append(1)
        if len(calls) <= len(errors):
            raise errors[len(calls) - 1]
        return len(calls)

    return fn, calls


def test_delays_double_up_to_the_cap_and_the_last_failure_is_raised(monkeypatch):
    slept, seen = [], []
    monkeypatch.setattr(retry.time, "sleep", slept.append)
    fn, calls = _failing([TimeoutError(str(i)) for i in range(5)])
    with pytest.raises(TimeoutError, match="^3$"):
        retry.retry(fn, attempts=4, first_delay_s=1.0, max_delay_s=3.0, transient=retry.network_fault,
                    on_retry=lambda e, attempt, delay: seen.append((str(e), attempt, delay)))
    assert len(calls) == 4 and slept == [1.0, 2.0, 3.0]
    assert seen == [("0", 1, 1.0), ("1", 2, 2.0), ("2", 3, 3.0)]


def test_jitter_stays_within_its_band(monkeypatch):
    slept = []
    monkeypatch.setattr(retry.time, "sleep", slept.append)
    fn, _ = _failing([ConnectionResetError()] * 3)
    assert retry.retry(fn, attempts=4, first_delay_s=2.0, jitter=0.25, transient=retry.network_fault) == 4
    assert [0.75 * d <= s <= 1.25 * d for s, d in zip(slept, (2.0, 4.0, 8.0))] == [True] * 3


def test_a_failure_that_is_not_transient_is_raised_at_once(monkeypatch):
    monkeypatch.setattr(retry.time, "sleep", lambda s: pytest.fail("slept"))
    fn, calls = _failing([PermissionError("denied")])
    with pytest.raises(PermissionError):
        retry.retry(fn, attempts=5, first_delay_s=1.0, transient=retry.network_fault)
    assert len(calls) == 1


def _http(code):
    return urllib.error.HTTPError("http://judge/v1", code, "x", {}, io.BytesIO(b""))


@pytest.mark.parametrize("error, retried", [
    (_http(429), True), (_http(408), True), (_http(503), True), (_http(400), False), (_http(401), False),
    (urllib.error.URLError("refused"), True), (TimeoutError(), True), (json.JSONDecodeError("x", "", 0), True),
    (ValueError("bad"), False),
])
def test_http_faults(error, retried):
    assert retry.http_fault(error) is retried


def test_network_faults_follow_the_cause():
    try:
        try:
            raise ConnectionResetError("reset")
        except ConnectionResetError as inner:
            raise RuntimeError("wrapped") from inner
    except RuntimeError as e:
        assert retry.network_fault(e)
    assert not retry.network_fault(OSError(28, "No space left on device"))
