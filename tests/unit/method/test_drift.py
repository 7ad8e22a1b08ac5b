"""The drift figures and gates (metareward/method/drift.py), on scores worked out by hand."""

from metareward.config import DriftSection
from metareward.method import drift


def _example():
    """The module docstring's example: own prev (3, 4) cur (5, 4); reference prev (3, 4) cur (2, 4)."""
    own = {"prev": {"p1": 3.0, "p2": 4.0}, "cur": {"p1": 5.0, "p2": 4.0}}
    ref = {"prev": {"p1": 3.0, "p2": 4.0}, "cur": {"p1": 2.0, "p2": 4.0}}
    texts = {"prev": {"p1": "ab", "p2": "abcd"}, "cur": {"p1": "abcdefgh", "p2": "x"}}
    return drift.metrics(own, ref, texts)


def test_metrics_of_the_docstring_example():
    """own 3.5 -> 4.5 (+1.0), reference 3.5 -> 3.0 (-0.5), gap 4.5 - 3.0 = 1.5; preferences: own p1 cur, p2 tie
    -> 0.75; reference p1 prev, p2 tie -> 0.25; excess 0.5. Preferred lengths (ties left out): own picks cur's p1
    (8 chars), the reference prev's p1 (2). Mean lengths: prev (2 + 4) / 2 = 3, cur (8 + 1) / 2 = 4.5.
    Intervals over 2 prompts: a resample is both p1 (own change 2), both p2 (0) or one each (1): the 2.5th and
    97.5th percentiles are 0 and 2; the reference's -1 and 0; the excess's (1, 0) gives 0 and 1."""
    m = _example()
    cis = {k: m.pop(k) for k in ("own_change_ci95", "ref_change_ci95", "self_preference_excess_ci95")}
    assert m == {"prompts": 2, "own_prev": 3.5, "own_cur": 4.5, "ref_prev": 3.5, "ref_cur": 3.0,
                 "own_change": 1.0, "ref_change": -0.5, "gap": 1.5, "self_preference": 0.75,
                 "ref_preference": 0.25, "self_preference_excess": 0.5, "own_preferred_chars": 8.0,
                 "ref_preferred_chars": 2.0, "prev_chars": 3.0, "cur_chars": 4.5}
    assert {k: (c["value"], c["lo"], c["hi"], c["n"]) for k, c in cis.items()} == {
        "own_change_ci95": (1.0, 0.0, 2.0, 2), "ref_change_ci95": (-0.5, -1.0, 0.0, 2),
        "self_preference_excess_ci95": (0.5, 0.0, 1.0, 2)}


def test_unscored_prompts_drop_out_of_the_preference_only():
    """p2 unscored by the own judge for cur: its mean is over p1 alone (5.0) and the preference over p1 (1.0)."""
    own = {"prev": {"p1": 3.0, "p2": 4.0}, "cur": {"p1": 5.0}}
    ref = {"prev": {}, "cur": {}}
    m = drift.metrics(own, ref, {"prev": {"p1": "a", "p2": "b"}, "cur": {"p1": "c", "p2": "d"}})
    assert (m["own_cur"], m["self_preference"], m["ref_preference"], m["self_preference_excess"]) == (5.0, 1.0, None,
                                                                                                      None)
    assert m["own_change_ci95"]["n"] == 1 and m["self_preference_excess_ci95"]["value"] is None


def _with(m, **bounds):
    """Metrics with the given intervals: own=(lo, hi), ref=(lo, hi), excess=(lo, hi)."""
    names = {"own": "own_change_ci95", "ref": "ref_change_ci95", "excess": "self_preference_excess_ci95"}
    return {**m, **{names[k]: {"value": None, "lo": lo, "hi": hi, "n": 8} for k, (lo, hi) in bounds.items()}}


def test_gates_read_the_interval_bounds():
    """A rise whose interval's low end is above 0 and a fall whose high end is below 0 diverge; k=2 needs two such
    iterations in a row, and one that does not diverge ends the run of them. The excess gate reads the excess's low
    end: 0.5 with a low end of 0.3 passes 0.25; with a low end of 0 (the docstring example's two prompts) it does
    not."""
    base = _example()
    cfg = DriftSection(k=2, max_self_preference_excess=0.25)
    assert drift.failed_gates([base], cfg) == []  # two prompts: nothing is certain
    sure = _with(base, own=(0.5, 1.5), ref=(-0.9, -0.1), excess=(0.3, 0.7))
    assert drift.failed_gates([sure], cfg) == [
        "health.drift.max_self_preference_excess: self_preference_excess 0.5 (95% low 0.3) > 0.25 (own 0.75, "
        "reference 0.25)"]
    calm = _with(sure, excess=(-0.2, 0.4))
    assert drift.failed_gates([calm], cfg) == []
    assert drift.failed_gates([calm, calm], cfg) == [
        "health.drift.k: the own judge's mean rose while the reference's fell in 2 iterations in a row "
        "(own +1.0, 95% low +0.5; reference -0.5, 95% high -0.1 at the last) >= 2"]
    unsure = _with(calm, ref=(-0.9, 0.1))  # the reference may not have fallen
    assert drift.failed_gates([calm, unsure, calm], cfg) == []
    assert drift.failed_gates([calm, calm], DriftSection(k=2, min_change=0.1)) == []  # -0.1 is not below -0.1
    assert drift.failed_gates([], cfg) == []


def test_bootstrap_intervals():
    """4 items 1, 1, 0, 1: value 0.75; the interval is the rounds' 2.5th..97.5th percentiles, inside [0, 1] and
    around the value; the same seed gives the same interval. A ratio: 1 of 2 and 0 of 1 -> 1 / 3."""
    from metareward.intervals import bootstrap

    b = bootstrap([1, 1, 0, 1], rounds=1000, seed=0)
    assert b["value"] == 0.75 and 0.0 <= b["lo"] <= 0.75 <= b["hi"] <= 1.0 and b["n"] == 4
    assert bootstrap([1, 1, 0, 1], rounds=1000, seed=0) == b
    assert bootstrap([1, 0], [2, 1])["value"] == round(1 / 3, 4)
    assert bootstrap([1, 1, 1])["lo"] == bootstrap([1, 1, 1])["hi"] == 1.0  # no spread, no width
    assert bootstrap([])["value"] is None
