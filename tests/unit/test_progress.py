"""Progress trackers: listeners see (label, done, total), nothing leaks out of a block, a bad listener is harmless."""

import doctest

from metareward import progress


def test_doctests():
    result = doctest.testmod(progress)
    assert result.attempted > 0 and result.failed == 0


def test_listeners_nest_and_end_with_their_block():
    outer, inner = [], []
    with progress.listening(lambda *a: outer.append(a)):
        with progress.listening(lambda *a: inner.append(a)), progress.stage("generate iter 2"):
            bar = progress.tracker(4, "generate")
            bar.advance(3)
        progress.tracker(1, "score").advance(1)
    progress.tracker(7, "unheard").advance(7)
    assert inner == [("generate iter 2: generate", 0, 4), ("generate iter 2: generate", 3, 4)]
    assert outer == inner + [("score", 0, 1), ("score", 1, 1)]


def test_a_failing_listener_does_not_break_the_work():
    def boom(*_):
        raise RuntimeError("ui down")

    seen = []
    with progress.listening(boom), progress.listening(lambda *a: seen.append(a)):
        progress.tracker(2, "x").advance(2)
    assert seen == [("x", 0, 2), ("x", 2, 2)]


def test_fake_engine_reports_its_rows():
    from metareward.engines.base import Sampling
    from metareward.engines.fake import FakeEngine

    seen = []
    with progress.listening(lambda *a: seen.append(a)):
        FakeEngine().generate(["a", "b", "c"], 2, Sampling(), 0)
    assert seen[0] == ("generate", 0, 6) and seen[-1] == ("generate", 6, 6) and len(seen) == 4
