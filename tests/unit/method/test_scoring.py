"""metareward.method.scoring: the expected score and verdict, when cache scores stand, score statistics, position
weights, battle matrix, Bradley-Terry, Elo."""

from __future__ import annotations

import doctest
import math

import numpy as np
import pytest

from metareward.method import scoring
from metareward.records import MetaVerdict
from metareward.method.prompts import SCORE_PREFIX, VERDICT_PREFIX
from metareward.method.scoring import (ScoreStats, battle_matrix, bradley_terry, cache_scores_stand, choice_prefix, elo,
                                       expected_score, expected_verdict, likeliest_choice, position_weights,
                                       score_stats)


def _v(a: str, b: str, p_a: float | None) -> MetaVerdict:
    winner = None if p_a is None else ("A" if p_a >= 0.5 else "B")
    return MetaVerdict(prompt_id="p", response_id="p-r0", a_id=a, b_id=b, text="", winner=winner, p_a=p_a)


def _gradient(e: np.ndarray, B: np.ndarray, l2: float) -> np.ndarray:
    """d/de of sum B_mn log sigmoid(e_m - e_n) - l2/2 ||e||^2, written out independently of the module."""
    g = -l2 * e.copy()
    for m in range(len(e)):
        for n in range(len(e)):
            p = 1 / (1 + math.exp(-(e[m] - e[n])))
            g[m] += B[m, n] * (1 - p)
            g[n] -= B[m, n] * (1 - p)
    return g


def test_expected_score_by_hand():
    """P(0..5) = [0.05, 0.05, 0.1, 0.2, 0.4, 0.2]: 0 + 0.05 + 0.2 + 0.6 + 1.6 + 1.0 = 3.45; the written point is the
    likeliest, 4, though the score sits between 3 and 4."""
    p = [0.05, 0.05, 0.1, 0.2, 0.4, 0.2]
    assert expected_score(p) == pytest.approx(3.45)
    assert likeliest_choice(p) == 4
    assert expected_score([1, 0, 0, 0, 0, 0]) == 0 and expected_score([0, 0, 0, 0, 0, 1]) == 5
    assert likeliest_choice([0.0, 0.5, 0.5]) == 1  # the first of equals


def test_the_choice_prefix_puts_the_forced_prefix_on_its_own_line():
    assert choice_prefix("Relevant and clear.", SCORE_PREFIX) == "Relevant and clear.\nScore: "
    assert choice_prefix("", SCORE_PREFIX) == "Score: "  # no reasoning (max_new_tokens=0): the prefix alone
    assert choice_prefix("A is careful.", VERDICT_PREFIX) == "A is careful.\nWinner: Judgment "


@pytest.mark.parametrize("sample, stands", [
    ("Relevant and clear.", True),  # scored after "Relevant and clear.\nScore: ": the very prefix
    ("Relevant and clear.\nScore: 4", False),  # wrote its own score: the cache read after "...4\nScore: "
    ("Relevant and clear.  ", False),  # trailing space stripped from the justification: another text
    ("", False),  # no reasoning: the prefix is "Score: " alone, the cache read after "\nScore: "
])
def test_cache_scores_stand_only_where_the_sample_is_its_own_justification(sample, stands):
    from metareward.method.parsing import justification

    prefix = choice_prefix(justification(sample), SCORE_PREFIX)
    assert cache_scores_stand(sample, "\n" + SCORE_PREFIX, prefix) is stands


def test_expected_verdict_is_the_likelier_judgment():
    assert [expected_verdict(p) for p in (0.51, 0.49, 0.5, 1.0, 0.0)] == ["A", "B", None, "A", "B"]


def test_score_stats_population_variance():
    """[4, 2, None]: mean 3; population variance ((4-3)^2 + (2-3)^2) / 2 = 1 (the sample variance would be 2)."""
    assert score_stats([4.0, 2.0, None]) == ScoreStats(mean=3.0, variance=1.0, n_valid=2, n_total=3)


def test_score_stats_edge_cases():
    """No valid score -> mean/variance None; one score -> variance 0; NaN counts as invalid."""
    assert score_stats([None, None]) == ScoreStats(None, None, 0, 2)
    assert score_stats([]) == ScoreStats(None, None, 0, 0)
    assert score_stats([5.0]) == ScoreStats(5.0, 0.0, 1, 1)
    assert score_stats([3.0, float("nan")]) == ScoreStats(3.0, 0.0, 1, 2)


def test_position_weights_three_to_one_bias():
    """A wins 3 of 4 calls: win_1st = 3, win_2nd = 1, so w1 = 1/4 = 0.25 and w2 = 3/4 = 0.75."""
    assert position_weights([1.0, 1.0, 1.0, 0.0]) == (0.25, 0.75)


def test_position_weights_probabilities_and_empty():
    """Probabilities 0.9, 0.6, 0.5: win_1st = 2.0, win_2nd = 1.0 -> (1/3, 2/3). Nothing -> (0.5, 0.5)."""
    w1, w2 = position_weights([0.9, 0.6, 0.5])
    assert w1 == pytest.approx(1 / 3) and w2 == pytest.approx(2 / 3)
    assert position_weights([]) == (0.5, 0.5)
    assert position_weights(iter([1.0, 0.0])) == (0.5, 0.5)  # any iterable, consumed once


def test_battle_matrix_three_judgments_by_hand():
    """w1 = 0.25 (win from first place), w2 = 0.75 (from second). Calls (A, B, p_a):

    (x, y, 1): x wins 1st -> B[x,y] += 0.25      (y, x, 0): x wins 2nd -> B[x,y] += 0.75   => B[x,y] = 1.0
    (x, z, 1): x wins 1st -> B[x,z] += 0.25      (z, x, 1): z wins 1st -> B[z,x] += 0.25
    (y, z, 0): z wins 2nd -> B[z,y] += 0.75      (z, y, None): tie/unparsed -> nothing
    (y, z, 0.4) ('expected' mode): B[y,z] += 0.25 * 0.4 = 0.1, B[z,y] += 0.75 * 0.6 = 0.45 => B[z,y] = 1.2
    """
    verdicts = [_v("x", "y", 1.0), _v("y", "x", 0.0), _v("x", "z", 1.0), _v("z", "x", 1.0),
                _v("y", "z", 0.0), _v("z", "y", None), _v("y", "z", 0.4)]
    B = battle_matrix(["x", "y", "z"], verdicts, w1=0.25, w2=0.75)
    expected = [[0.0, 1.0, 0.25],
                [0.0, 0.0, 0.1],
                [0.25, 1.2, 0.0]]
    np.testing.assert_allclose(B, expected, atol=1e-12)


def test_battle_matrix_rejects_unknown_or_self_ids():
    """A verdict naming a judgment outside ids (or one judged against itself) is a caller bug."""
    with pytest.raises(ValueError, match="w"):
        battle_matrix(["x", "y"], [_v("x", "w", 1.0)], 0.5, 0.5)
    with pytest.raises(ValueError):
        battle_matrix(["x", "y"], [_v("x", "x", 1.0)], 0.5, 0.5)


def test_bradley_terry_two_players_ln3():
    """B = [[0, 3], [1, 0]]: the MLE sets sigmoid(e0 - e1) = 3/4, so e0 - e1 = ln 3; centred: +-ln(3)/2."""
    B = np.array([[0.0, 3.0], [1.0, 0.0]])
    e = bradley_terry(B, l2=0.0)
    np.testing.assert_allclose(e, [math.log(3) / 2, -math.log(3) / 2], atol=1e-9)
    assert bradley_terry(B, l2=1e-9)[0] - bradley_terry(B, l2=1e-9)[1] == pytest.approx(math.log(3), abs=1e-6)


def test_bradley_terry_three_players_closed_form():
    """Pairwise records in ratio of strengths pi = (4, 2, 1) (2:1, 4:1, 2:1) make ln(pi) the exact MLE.

    Each pair's gradient term B_mn - (B_mn + B_nm) * pi_m / (pi_m + pi_n) is then 0, so centred:
    e = (ln 4, ln 2, 0) - ln 2 = (ln 2, 0, -ln 2).
    """
    B = np.array([[0.0, 2.0, 4.0], [1.0, 0.0, 2.0], [1.0, 1.0, 0.0]])
    e = bradley_terry(B, l2=0.0)
    np.testing.assert_allclose(e, [math.log(2), 0.0, -math.log(2)], atol=1e-9)


def test_bradley_terry_penalised_gradient_is_zero():
    """With l2 = 0.5 no closed form; the returned point must zero the gradient (written out by hand above)."""
    B = np.array([[0.0, 2.0, 0.5], [1.0, 0.0, 3.0], [0.0, 1.0, 0.0]])
    e = bradley_terry(B, l2=0.5)
    np.testing.assert_allclose(_gradient(e, B, 0.5), 0.0, atol=1e-9)
    assert e.sum() == pytest.approx(0.0, abs=1e-12)


def test_bradley_terry_l2_shrinks_towards_zero():
    """A penalty pulls the 3:1 gap below ln 3."""
    gap = np.ptp(bradley_terry(np.array([[0.0, 3.0], [1.0, 0.0]]), l2=1.0))
    assert 0.0 < gap < math.log(3)


def test_bradley_terry_symmetric_and_empty():
    """A symmetric record gives equal (zero) strengths; no games gives zeros; no players gives []."""
    np.testing.assert_allclose(bradley_terry(np.array([[0, 2.0, 1], [2, 0, 1], [1, 1, 0]])), 0.0, atol=1e-12)
    np.testing.assert_array_equal(bradley_terry(np.zeros((3, 3)), l2=0.0), 0.0)
    assert bradley_terry(np.zeros((0, 0))).shape == (0,)


def test_bradley_terry_never_winner_stays_finite():
    """z never wins: no finite MLE without a penalty, yet both settings return finite, ordered values."""
    B = np.array([[0.0, 1.0, 2.0], [1.0, 0.0, 2.0], [0.0, 0.0, 0.0]])
    for l2 in (1e-3, 0.0):
        e = bradley_terry(B, l2=l2)
        assert np.all(np.isfinite(e))
        assert e[0] == pytest.approx(e[1], abs=1e-6) and e[2] < e[0] - 3
    np.testing.assert_allclose(_gradient(bradley_terry(B, l2=1e-3), B, 1e-3), 0.0, atol=1e-8)


def test_elo_scale():
    """Elo = 1000 + 400 eps / ln 10; the Elo win probability then equals sigmoid(eps_m - eps_n)."""
    eps = np.array([math.log(3) / 2, -math.log(3) / 2])
    r = elo(eps)
    assert elo(np.array([0.0]))[0] == 1000.0
    p_elo = 1 / (1 + 10 ** (-(r[0] - r[1]) / 400))
    assert p_elo == pytest.approx(0.75)  # = 3 / (3 + 1), the record the eps were fitted to


def test_doctests():
    """The docstring examples are real input/output."""
    result = doctest.testmod(scoring)
    assert result.attempted > 0 and result.failed == 0
