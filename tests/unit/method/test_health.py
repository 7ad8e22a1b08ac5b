"""Judge health metrics and gates, numbers worked out by hand."""

import math

import pytest

from metareward.method import health
from metareward.config import HealthSection
from metareward.records import Judgment


def _j(prompt, response, k, score):
    return Judgment(id=f"{response}-j{k}", response_id=response, prompt_id=prompt, text="", score=score)


def test_metrics_by_hand():
    """p1: r1 scores 5, 5 (mean 5), r2 scores 4, None (mean 4): not a tie. p2: r3 5 (mean 5), r4 4.6 (mean 4.6):
    not a tie either, though both round to 5. p3: r5 2, r6 2: a tie.
    Scores 5, 5, 4, 5, 4.6, 2, 2 -> rounded 5, 5, 4, 5, 5, 2, 2: histogram {2: 2, 4: 1, 5: 4} of 7.
    entropy = -(2/7 log2 2/7 + 1/7 log2 1/7 + 4/7 log2 4/7) = 1.3788 bits; share of 5s = 4/7 = 0.5714."""
    js = [_j("p1", "r1", 0, 5), _j("p1", "r1", 1, 5), _j("p1", "r2", 0, 4), _j("p1", "r2", 1, None),
          _j("p2", "r3", 0, 5), _j("p2", "r4", 0, 4.6), _j("p3", "r5", 0, 2), _j("p3", "r6", 0, 2)]
    m = health.judge_metrics(js)
    expected_entropy = -(2 / 7 * math.log2(2 / 7) + 1 / 7 * math.log2(1 / 7) + 4 / 7 * math.log2(4 / 7))
    assert m["parse_rate"] == 0.875  # 7 of 8
    assert m["tie_rate"] == round(1 / 3, 4)
    assert m["score_entropy"] == pytest.approx(expected_entropy, abs=1e-4) and round(expected_entropy, 4) == 1.3788
    assert m["share_max_score"] == round(4 / 7, 4)
    assert m["score_histogram"] == {"0": 0, "1": 0, "2": 2, "3": 0, "4": 1, "5": 4}
    assert health.failed_gates(m, HealthSection()) == []


def test_collapsed_judge_fails_three_gates():
    """Every score 5: one histogram bin (entropy 0), every prompt a tie, share of 5s 1.0."""
    js = [_j(f"p{i}", f"p{i}-r{k}", n, 5) for i in range(4) for k in range(3) for n in range(2)]
    m = health.judge_metrics(js)
    assert (m["parse_rate"], m["tie_rate"], m["score_entropy"], m["share_max_score"]) == (1.0, 1.0, 0.0, 1.0)
    assert health.failed_gates(m, HealthSection()) == [
        "health.max_tie_rate: tie_rate 1.0 > 0.9",
        "health.min_score_entropy: score_entropy 0.0 < 0.1",
        "health.max_share_max_score: share_max_score 1.0 > 0.9"]


def test_unparseable_judge_fails_the_parse_gate():
    js = [_j("p1", "r1", 0, None), _j("p1", "r2", 0, None), _j("p1", "r3", 0, 3)]
    failed = health.failed_gates(health.judge_metrics(js), HealthSection(min_parse_rate=0.5, max_tie_rate=1.0,
                                                                            min_score_entropy=0.0))
    assert failed == ["health.min_parse_rate: parse_rate 0.3333 < 0.5"]


def test_pairs_gate():
    assert health.pairs_gate(0, HealthSection()) == ["health.min_pairs: pairs 0 < 1"]
    assert health.pairs_gate(3, HealthSection(min_pairs=3)) == []


def test_expected_mode_entropy_uses_the_mean_distribution():
    """P(0..5) of two judgments: [0, 0, 1, 0, 0, 0] and [0, 0, .5, .5, 0, 0] -> mean [0, 0, .75, .25, 0, 0];
    entropy = -(.75 log2 .75 + .25 log2 .25) = 0.8113 bits. A judge that always says P(5) = 1 has entropy 0."""
    js = [Judgment(id="r1-j0", response_id="r1", prompt_id="p", text="", score=2.0, score_probs=[0, 0, 1, 0, 0, 0]),
          Judgment(id="r2-j0", response_id="r2", prompt_id="p", text="", score=2.5,
                   score_probs=[0, 0, 0.5, 0.5, 0, 0])]
    assert health.judge_metrics(js)["score_entropy"] == 0.8113
    five = [Judgment(id=f"r{i}-j0", response_id=f"r{i}", prompt_id="p", text="", score=5.0,
                     score_probs=[0, 0, 0, 0, 0, 1]) for i in range(3)]
    assert health.judge_metrics(five)["score_entropy"] == 0.0
