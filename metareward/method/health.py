"""Judge health gates: is the judge still judging? Pure functions over one iteration's judgments.

A judge that collapses (every score 5, the failure NeMo-Aligner's Self-Rewarding docs warn about), stops
writing parseable scores, or cannot tell responses apart produces no useful preference pairs; training on what
is left would teach the model nothing or worse. After the judge stage these metrics are checked against the
``health`` config section; a failed gate stops the iteration with the iteration's ``health.json`` (the metrics, the
thresholds and the failed gates) and a StageError naming the gate. Finished stages stay in the store.

Metrics (judgments of iteration t; scores rounded to the rubric's points 0..5):

- parse_rate: share of judgments with a score (parse mode: a "Score: N" was found);
- tie_rate: share of prompts whose responses all get the same mean score (or fewer than two have one): no
  actor pair can come from them;
- score_entropy: Shannon entropy in bits of the judge's score distribution over 0..5 (0 = one score for
  everything; log2(6) = 2.585 = uniform): the histogram of the rounded scores, or, when the judgments carry
  P(0..5) ('expected' mode), the mean of those distributions (rounding expected scores such as 2.1 and 2.4 would
  call a judge that hesitates between 2 and 3 for every response "collapsed");
- share_max_score: share of scores that round to 5.

Example, 4 judgments with scores 5, 5, 4, None over two prompts::

    parse_rate 0.75, histogram {4: 1, 5: 2}, entropy -(1/3 log2 1/3 + 2/3 log2 2/3) = 0.9183 bits,
    share_max_score 2/3
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from typing import TYPE_CHECKING

from metareward.records import Judgment

if TYPE_CHECKING:
    from metareward.config import HealthSection

_TOL = 1e-9


def _rounded(score: float) -> int:
    return min(5, max(0, math.floor(score + 0.5)))


def judge_metrics(judgments: list[Judgment]) -> dict[str, float | int | None]:
    """parse_rate, tie_rate, score_entropy (bits), share_max_score, and the counts they come from."""
    scores = [j.score for j in judgments if j.score is not None]
    hist = Counter(_rounded(s) for s in scores)
    probs = [j.score_probs for j in judgments if j.score is not None and j.score_probs]
    if probs:  # expected mode: the mean P(0..5)
        dist = [sum(p[k] for p in probs) / len(probs) for k in range(len(probs[0]))]
    else:
        dist = [c / len(scores) for c in hist.values()] if scores else []
    entropy = -sum(p * math.log2(p) for p in dist if p > 0)
    by_response: dict[str, list[float]] = defaultdict(list)
    prompt_of: dict[str, str] = {}
    for j in judgments:
        prompt_of[j.response_id] = j.prompt_id
        if j.score is not None:
            by_response[j.response_id].append(j.score)
    means: dict[str, list[float]] = defaultdict(list)
    for rid, pid in prompt_of.items():
        if by_response[rid]:
            means[pid].append(sum(by_response[rid]) / len(by_response[rid]))
    prompts = set(prompt_of.values())
    ties = sum(1 for p in prompts if len(means[p]) < 2 or max(means[p]) - min(means[p]) <= _TOL)
    return {
        "judgments": len(judgments), "prompts": len(prompts),
        "parse_rate": round(len(scores) / len(judgments), 4) if judgments else None,
        "tie_rate": round(ties / len(prompts), 4) if prompts else None,
        "score_entropy": round(entropy + 0.0, 4),
        "share_max_score": round(hist[5] / len(scores), 4) if scores else None,
        "score_histogram": {str(k): hist.get(k, 0) for k in range(6)},
    }


def failed_gates(metrics: dict, health: HealthSection) -> list[str]:
    """One line per failed gate, naming its config key, e.g. 'health.max_share_max_score: 1.0 > 0.9'.
    A metric that could not be computed (no judgment, no parsed score) fails its gate."""
    checks = [("min_parse_rate", "parse_rate", "<", health.min_parse_rate),
              ("max_tie_rate", "tie_rate", ">", health.max_tie_rate),
              ("min_score_entropy", "score_entropy", "<", health.min_score_entropy),
              ("max_share_max_score", "share_max_score", ">", health.max_share_max_score)]
    failed = []
    for key, metric, bad, limit in checks:
        value = metrics.get(metric)
        if value is None or (value < limit if bad == "<" else value > limit):
            failed.append(f"health.{key}: {metric} {value} {bad} {limit}")
    return failed


def pairs_gate(n_pairs: int, health: HealthSection) -> list[str]:
    return [] if n_pairs >= health.min_pairs else [f"health.min_pairs: pairs {n_pairs} < {health.min_pairs}"]
