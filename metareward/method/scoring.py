"""Numbers behind the pairs: the judge's expected score and the meta-judge's expected verdict (read from choice
probabilities), judge-score statistics, the meta-judge's battle matrix, Bradley-Terry and Elo.

Method.md 4.3: each meta-judge call compares judgments j_m (shown first, "A") and j_n. Wins are weighted to
cancel the meta-judge's position bias, summed into a battle matrix B, and a Bradley-Terry fit turns B into one
strength per judgment:

    >>> w1, w2 = position_weights([1.0, 1.0, 1.0, 0.0])   # A won 3 of 4 calls
    >>> (w1, w2)
    (0.25, 0.75)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from metareward.records import MetaVerdict


@dataclass(frozen=True)
class ScoreStats:
    """Summary of one response's judge scores; ``mean``/``variance`` are None when no score parsed."""

    mean: float | None
    variance: float | None
    n_valid: int
    n_total: int


def score_stats(scores: Sequence[float | None]) -> ScoreStats:
    """Mean and population variance of the valid (not None, not NaN) scores.

    Population variance (ddof=0) because the N judgments are the whole sample being described, not an
    estimate of a wider population, and it is defined for a single score (0.0) rather than NaN. Which
    response is "most uncertain" (method.md 4.1) is the same either way when N is equal across responses.

    >>> score_stats([4.0, 2.0, None])
    ScoreStats(mean=3.0, variance=1.0, n_valid=2, n_total=3)
    >>> score_stats([None])
    ScoreStats(mean=None, variance=None, n_valid=0, n_total=1)
    """
    valid = [float(s) for s in scores if s is not None and not math.isnan(s)]
    if not valid:
        return ScoreStats(None, None, 0, len(scores))
    arr = np.asarray(valid)
    return ScoreStats(float(arr.mean()), float(arr.var(ddof=0)), len(valid), len(scores))


# ----------------------------------------------------------------------------------------------- expected mode
# 'expected' scoring keeps the judge's (or meta-judge's) reasoning, writes the forced prefix after it ("Score: ",
# "Winner: Judgment ") and reads the probability of each choice there (AlpacaEval-style weighting).


def choice_prefix(reasoning: str, prefix: str) -> str:
    """The assistant text the choices are read after: the reasoning, then the forced prefix on a line of its own
    (the prefix alone when there is no reasoning).

    >>> choice_prefix("Clear and correct.", "Score: "), choice_prefix("", "Score: ")
    ('Clear and correct.\\nScore: ', 'Score: ')
    """
    return f"{reasoning}\n{prefix}" if reasoning else prefix


def expected_score(probs: Sequence[float]) -> float:
    """The judge's score: the mean of the rubric's points 0, 1, ... weighted by their probabilities.

    >>> expected_score([0.0, 0.0, 0.5, 0.5, 0.0, 0.0]), expected_score([0.1, 0.0, 0.0, 0.0, 0.0, 0.9])
    (2.5, 4.5)
    """
    return sum(i * p for i, p in enumerate(probs))


def likeliest_choice(probs: Sequence[float]) -> int:
    """The index of the most probable choice (the first of equals): the point written after the prefix.

    >>> likeliest_choice([0.1, 0.4, 0.4, 0.1])
    1
    """
    return max(range(len(probs)), key=probs.__getitem__)


def cache_scores_stand(sample: str, suffix: str, prefix: str) -> bool:
    """Whether choice probabilities read on a sample's own KV cache, right after ``sample + suffix`` (the shortcut
    that spares a second prefill), are the ones the judge is scored by: those read after ``prefix``
    (`choice_prefix` of the sample's justification). Only where both are the same text, i.e. nothing of the
    sample was cut off (a score statement it wrote itself, or trailing space).

    >>> cache_scores_stand("Clear.", "\\nScore: ", choice_prefix("Clear.", "Score: "))
    True
    >>> cache_scores_stand("Clear.\\nScore: 4", "\\nScore: ", choice_prefix("Clear.", "Score: "))
    False
    """
    return sample + suffix == prefix


def expected_verdict(p_a: float) -> str | None:
    """The meta-judge's verdict from P(A) (renormalised over A and B): the likelier judgment, None on a tie.

    >>> expected_verdict(0.7), expected_verdict(0.3), expected_verdict(0.5)
    ('A', 'B', None)
    """
    return "A" if p_a > 0.5 else "B" if p_a < 0.5 else None


# ----------------------------------------------------------------------------------------------- pairs


def position_weights(p_as: Iterable[float]) -> tuple[float, float]:
    """Weights (w1, w2) for a win from the first and from the second position (method.md 4.3).

    ``p_as`` holds, per decided meta-judge call, the probability that the first-shown judgment won (1.0/0.0
    for a parsed verdict). A position that wins more often has its wins discounted: w1 = win_2nd / total.

    >>> position_weights([1.0, 1.0, 1.0, 0.0])
    (0.25, 0.75)
    >>> position_weights([])
    (0.5, 0.5)
    """
    win_1st = win_2nd = 0.0
    for p in p_as:
        win_1st += p
        win_2nd += 1.0 - p
    total = win_1st + win_2nd
    if total <= 0.0:
        return 0.5, 0.5  # no evidence of a bias: weigh both positions equally
    return win_2nd / total, win_1st / total


def battle_matrix(ids: Sequence[str], verdicts: Iterable[MetaVerdict], w1: float, w2: float) -> np.ndarray:
    """B[m, n]: the position-weighted number of wins of judgment ``ids[m]`` over ``ids[n]``.

    A verdict with a_id=m, b_id=n adds w1 * p_a to B[m, n] (m won from first place) and w2 * (1 - p_a) to
    B[n, m] (n won from second place). Verdicts with p_a None (tie or unparseable) add nothing.

    >>> v = MetaVerdict(prompt_id="p", response_id="r", a_id="x", b_id="y", text="", winner="A", p_a=1.0)
    >>> battle_matrix(["x", "y"], [v], w1=0.25, w2=0.75).tolist()
    [[0.0, 0.25], [0.0, 0.0]]
    """
    index = {j: i for i, j in enumerate(ids)}
    B = np.zeros((len(ids), len(ids)))
    for v in verdicts:
        if v.a_id not in index or v.b_id not in index or v.a_id == v.b_id:
            raise ValueError(f"verdict {v.a_id} vs {v.b_id}: ids must be two different members of {list(ids)}")
        if v.p_a is None:
            continue
        a, b = index[v.a_id], index[v.b_id]
        B[a, b] += w1 * v.p_a
        B[b, a] += w2 * (1.0 - v.p_a)
    return B


def _bt_objective(e: np.ndarray, B: np.ndarray, l2: float) -> float:
    """sum_mn B_mn log sigmoid(e_m - e_n) - l2/2 ||e||^2, with log sigmoid(x) = -log(1 + exp(-x)) kept stable.

    >>> round(_bt_objective(np.zeros(2), np.array([[0.0, 1.0], [0.0, 0.0]]), 0.0), 4)  # log(1/2)
    -0.6931
    """
    diff = e[:, None] - e[None, :]
    return float(-(B * np.logaddexp(0.0, -diff)).sum() - 0.5 * l2 * e @ e)


def _bt_newton_step(e: np.ndarray, B: np.ndarray, l2: float) -> np.ndarray:
    """The Newton ascent direction (L + l2 I)^-1 grad at ``e``, L the Laplacian of the game weights.

    grad_k = sum_n [B_kn - T_kn P_kn] - l2 e_k with T = B + B^T games played and P_kn = sigmoid(e_k - e_n);
    the Hessian is -(L + l2 I) with L built from T_kn P_kn (1 - P_kn). With l2 == 0, L is singular along the
    all-equal direction, which the objective ignores, so the pseudo-inverse gives the centred step.
    At e = 0 with B = [[0, 3], [1, 0]]: grad = (3 - 4/2, 1 - 4/2) = (1, -1), L = [[1, -1], [-1, 1]], whose
    eigenvalue along (1, -1) is 2, so the step is (0.5, -0.5).

    >>> _bt_newton_step(np.zeros(2), np.array([[0.0, 3.0], [1.0, 0.0]]), 0.0).round(6).tolist()
    [0.5, -0.5]
    """
    P = 1.0 / (1.0 + np.exp(-(e[:, None] - e[None, :])))
    T = B + B.T
    grad = (B - T * P).sum(axis=1) - l2 * e
    W = T * P * (1.0 - P)
    L = np.diag(W.sum(axis=1)) - W + l2 * np.eye(len(e))
    return np.linalg.pinv(L) @ grad if l2 == 0.0 else np.linalg.solve(L, grad)


def bradley_terry(B: np.ndarray, l2: float = 1e-3, max_iter: int = 100, tol: float = 1e-10) -> np.ndarray:
    """Bradley-Terry strengths: argmax_e sum_mn B_mn log sigmoid(e_m - e_n) - l2/2 ||e||^2, centred to mean 0.

    Newton's method with step halving, so every accepted step raises the (concave) objective. With l2 > 0 the
    optimum is unique and finite even when a judgment never wins. With l2 == 0 (NeMo-Aligner's unpenalised fit)
    such a judgment has no finite MLE: the fit stops when steps no longer improve the objective or after
    ``max_iter``, returning large but finite, correctly ordered values.

    >>> e = bradley_terry(np.array([[0.0, 3.0], [1.0, 0.0]]), l2=0.0)   # 3 wins to 1: e0 - e1 = ln 3
    >>> round(float(e[0] - e[1]), 6), round(math.log(3), 6)
    (1.098612, 1.098612)
    """
    B = np.asarray(B, dtype=float)
    e = np.zeros(B.shape[0])
    if e.size == 0:
        return e
    f = _bt_objective(e, B, l2)
    for _ in range(max_iter):
        step = _bt_newton_step(e, B, l2)
        t = 1.0
        while t > 1e-10 and _bt_objective(e + t * step, B, l2) < f:
            t *= 0.5  # a full Newton step can overshoot far from the optimum
        if t <= 1e-10:
            break  # no ascent left at float precision
        e = e + t * step
        f = _bt_objective(e, B, l2)
        if np.max(np.abs(t * step), initial=0.0) < tol:
            break
    return e - e.mean()


def elo(eps: np.ndarray) -> np.ndarray:
    """Bradley-Terry strengths on the Elo scale: 1000 + 400 * eps / ln 10.

    Elo's P(m beats n) = 1 / (1 + 10^(-(R_m - R_n)/400)) equals sigmoid(eps_m - eps_n) exactly with this
    factor. (NeMo-Aligner writes 400 * eps + 1000, which stretches differences by ln 10.)

    >>> elo(np.array([0.0, math.log(10)])).tolist()
    [1000.0, 1400.0]
    """
    return 1000.0 + 400.0 * np.asarray(eps, dtype=float) / math.log(10.0)
