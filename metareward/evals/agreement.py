"""How well a judge agrees with human (or GPT-4) pairwise labels: method.md 6.2, Tables 3 and 7.

Inputs are simple JSONL: labels ``{"id", "prompt", "response_a", "response_b", "label"}`` (or just ``{"id",
"label"}``) and verdicts ``{"id", "verdict", "verdict_swapped"?, "score_a"?, "score_b"?}``, every label and
verdict one of ``a``, ``b``, ``tie``. ``verdict_swapped`` is the verdict given with the two responses shown
in the other order, in the positions as shown (so there ``a`` is the original response_b).

"Without ties" follows FastChat's ``compute_agreement.py``: a pair where either side says tie is left out.

    >>> agreement({"1": "a", "2": "b", "3": "tie"}, {"1": "a", "2": "a", "3": "tie"})["agreement"]
    0.6666666666666666
"""

from __future__ import annotations

import math
from collections import Counter

import numpy as np

from metareward.evals.io import EvalFileError, need, read_json_list, read_jsonl

LABELS = ("a", "b", "tie")
_SIGN = {"a": 1.0, "tie": 0.0, "b": -1.0}
_FLIP = {"a": "b", "b": "a", "tie": "tie"}


def _label(value, path: str, lineno: int, key: str) -> str:
    v = value.strip().lower() if isinstance(value, str) else value
    if v not in LABELS:
        raise EvalFileError(f"{path}: line {lineno}: {key} must be 'a', 'b' or 'tie', got {value!r}")
    return v


def _rows_by_id(path: str) -> list[tuple[int, str, dict]]:
    seen: dict[str, int] = {}
    out = []
    for lineno, row in read_jsonl(path):
        rid = str(need(row, "id", path, lineno, (str, int)))
        if rid in seen:
            raise EvalFileError(f"{path}: line {lineno}: duplicate id {rid!r} (first on line {seen[rid]})")
        seen[rid] = lineno
        out.append((lineno, rid, row))
    return out


def read_labels(path: str) -> dict[str, str]:
    return {rid: _label(need(row, "label", path, n), path, n, "label") for n, rid, row in _rows_by_id(path)}


def read_verdicts(path: str) -> dict[str, dict]:
    """id -> {"verdict", "verdict_swapped" (or None), "score_a", "score_b" (or None)}."""
    out = {}
    for n, rid, row in _rows_by_id(path):
        swapped = row.get("verdict_swapped")
        out[rid] = {"verdict": _label(need(row, "verdict", path, n), path, n, "verdict"),
                    "verdict_swapped": None if swapped is None else _label(swapped, path, n, "verdict_swapped"),
                    "score_a": row.get("score_a"), "score_b": row.get("score_b")}
    return out


# --------------------------------------------------------------------------------------------- metrics


def agreement(labels: dict[str, str], verdicts: dict[str, str]) -> dict:
    """Share of common ids where verdict == label; and the same over pairs where neither side is a tie.
    ``n_ties`` counts the pairs that leaves out; ``n_missing`` the labelled ids with no verdict."""
    ids = [i for i in labels if i in verdicts]
    agree = [labels[i] == verdicts[i] for i in ids]
    strict = [labels[i] == verdicts[i] for i in ids if "tie" not in (labels[i], verdicts[i])]
    return {"agreement": sum(agree) / len(agree) if agree else float("nan"),
            "agreement_without_ties": sum(strict) / len(strict) if strict else float("nan"),
            "n": len(ids), "n_ties": len(ids) - len(strict), "n_missing": len(labels) - len(ids)}


def swap_consistency(verdicts: dict[str, dict]) -> dict:
    """Share of pairs judged in both orders whose two verdicts name the same response (tie with tie)."""
    both = [v for v in verdicts.values() if v.get("verdict_swapped") is not None]
    same = sum(_FLIP[v["verdict_swapped"]] == v["verdict"] for v in both)
    return {"swap_consistency": same / len(both) if both else float("nan"), "n_swapped": len(both)}


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n with ties given their average rank (scipy.stats.rankdata's default)."""
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x))
    xs = x[order]
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and xs[j + 1] == xs[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return ranks


def spearman(x, y) -> float:
    """Spearman's rho: Pearson's r of the average ranks (scipy.stats.spearmanr); NaN if either is constant."""
    rx, ry = _ranks(np.asarray(x, float)), _ranks(np.asarray(y, float))
    if len(rx) < 2 or rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def kendall_tau_b(x, y) -> float:
    """Kendall's tau-b (scipy.stats.kendalltau's default): (C - D) / sqrt((n0 - n1)(n0 - n2)), O(n^2)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    n = len(x)
    conc = disc = tie_x = tie_y = 0
    for i in range(n):
        dx, dy = np.sign(x[i + 1:] - x[i]), np.sign(y[i + 1:] - y[i])
        prod = dx * dy
        conc += int((prod > 0).sum())
        disc += int((prod < 0).sum())
        tie_x += int((dx == 0).sum())
        tie_y += int((dy == 0).sum())
    n0 = n * (n - 1) // 2
    denom = math.sqrt((n0 - tie_x) * (n0 - tie_y))
    return (conc - disc) / denom if denom > 0 else float("nan")


def correlations(labels: dict[str, str], verdicts: dict[str, dict]) -> dict:
    """Spearman and Kendall between the judge's score margin (score_a - score_b) and the human label coded
    a = +1, tie = 0, b = -1, over the pairs whose verdict carries both scores."""
    ids = [i for i in labels if i in verdicts and verdicts[i].get("score_a") is not None
           and verdicts[i].get("score_b") is not None]
    margin = [float(verdicts[i]["score_a"]) - float(verdicts[i]["score_b"]) for i in ids]
    human = [_SIGN[labels[i]] for i in ids]
    return {"spearman": spearman(margin, human), "kendall_tau": kendall_tau_b(margin, human), "n_scored": len(ids)}


def verdict_from_scores(score_a: float | None, score_b: float | None, tie_margin: float = 0.0) -> str | None:
    """A pointwise judge's pairwise verdict: the higher score wins; |difference| <= tie_margin is a tie."""
    if score_a is None or score_b is None:
        return None
    d = score_a - score_b
    return "tie" if abs(d) <= tie_margin else "a" if d > 0 else "b"


def evaluate(labels: dict[str, str], verdicts: dict[str, dict]) -> dict:
    """Everything for one judge: agreement with/without ties, swap consistency, rank correlations."""
    out = agreement(labels, {i: v["verdict"] for i, v in verdicts.items()})
    out.update(swap_consistency(verdicts))
    out.update(correlations(labels, verdicts))
    out["label_counts"] = dict(sorted(Counter(labels.values()).items()))
    return out


# --------------------------------------------------------------------------------------------- importer


def _conversation_turn(conv, turn: int, where: str) -> tuple[str, str]:
    """(prompt, answer) of turn ``turn`` (1-based) of an OpenAI-style message list; earlier turns are folded
    into the prompt as a transcript so the pair can be judged as one instruction."""
    users = [m for m in conv if m.get("role") == "user"]
    bots = [m for m in conv if m.get("role") == "assistant"]
    if len(users) < turn or len(bots) < turn:
        raise EvalFileError(f"{where}: conversation has no turn {turn}")
    if turn == 1:
        return users[0]["content"], bots[0]["content"]
    history = "".join(f"User: {u['content']}\nAssistant: {b['content']}\n\n" for u, b in zip(users, bots[:turn - 1]))
    return f"{history}User: {users[turn - 1]['content']}", bots[turn - 1]["content"]


def import_mt_bench_human(path: str) -> list[dict]:
    """Rows of ``lmsys/mt_bench_human_judgments`` (FastChat's ``human_judgments.json``: a JSON list, or JSONL)
    ``{question_id, model_a, model_b, winner, judge, conversation_a, conversation_b, turn}`` as label rows.
    winner model_a -> a, model_b -> b, tie and "tie (bothbad)" -> tie; one row per vote."""
    is_list = path.endswith(".json")
    unit = "entry" if is_list else "line"
    out, seen = [], Counter()
    for n, v in read_json_list(path) if is_list else read_jsonl(path):
        where = f"{path}: {unit} {n}"
        winner = need(v, "winner", path, n, str, unit)
        label = "a" if winner == "model_a" else "b" if winner == "model_b" else "tie" if "tie" in winner else None
        if label is None:
            raise EvalFileError(f"{where}: winner must be model_a, model_b or tie..., got {winner!r}")
        turn = need(v, "turn", path, n, int, unit)
        prompt, ans_a = _conversation_turn(need(v, "conversation_a", path, n, list, unit), turn, where)
        _, ans_b = _conversation_turn(need(v, "conversation_b", path, n, list, unit), turn, where)
        base = f"{v.get('question_id')}-{v.get('model_a')}-{v.get('model_b')}-t{turn}-{v.get('judge')}"
        seen[base] += 1
        rid = base if seen[base] == 1 else f"{base}-{seen[base]}"
        out.append({"id": rid, "prompt": prompt, "response_a": ans_a, "response_b": ans_b, "label": label})
    return out


def read_pairs(path: str) -> list[dict]:
    """Label rows with the texts needed to judge them: {id, prompt, response_a, response_b, label}."""
    out = []
    for n, rid, row in _rows_by_id(path):
        for key in ("prompt", "response_a", "response_b"):
            need(row, key, path, n, str)
        out.append({**row, "id": rid, "label": _label(need(row, "label", path, n), path, n, "label")})
    return out
