"""The terminal bars: the rate is the average since the bar started, empty trackers draw no bar."""

import io

from rich.console import Console

from metareward.reporting.console import RateColumn, RichBars


def _bars(clock):
    return RichBars(console=Console(file=io.StringIO(), width=120), clock=lambda: clock[0])


def _rate(bars, label):
    task = bars.progress.tasks[bars.tasks[label]]
    return str(RateColumn().render(task))


def test_rate_is_the_average_over_the_bar_not_the_last_burst():
    clock = [0.0]
    bars = _bars(clock)
    bars("judge: generate", 0, 192)
    assert _rate(bars, "judge: generate") == "?/s"
    clock[0] = 60.0
    bars("judge: generate", 96, 192)  # one decode batch done after a minute
    assert _rate(bars, "judge: generate") == "1.6/s"
    clock[0] = 60.5
    bars("judge: generate", 192, 192)  # the other half a second later
    assert _rate(bars, "judge: generate") == "3.2/s"  # 192 / 60.5 (a moving estimate read ~190/s)
    clock[0] = 600.0  # a finished bar keeps its rate
    assert _rate(bars, "judge: generate") == "3.2/s"


def test_a_tracker_with_nothing_to_do_draws_no_bar():
    bars = _bars([0.0])
    bars("judge: score", 0, 0)
    assert bars.tasks == {} and not bars.progress.tasks
    bars("judge: score", 0, 3)
    assert len(bars.progress.tasks) == 1
