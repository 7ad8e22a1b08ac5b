"""Arena-Hard v0.1, as arena-hard-auto scores it (``gen_judgment.py``, v0.1 ``show_result.py``).

Each prompt is judged twice against the baseline's answer (gpt-4-0314 in the benchmark): game 1 shows the
baseline as assistant A, game 2 swaps the positions. The judge ends with one of ``[[A>>B]]``, ``[[A>B]]``,
``[[A=B]]``, ``[[B>A]]``, ``[[B>>A]]``; a strong verdict counts as 3 battles, a slight one as 1, a tie as 1.
A Bradley-Terry model (logistic regression on the battles, Elo scale 400, baseline anchored at 1000) turns the
battles into a rating, reported as the predicted win rate against the baseline in %, with a 95% interval from
100 bootstrap resamples of the battles (``np.random.seed(42)``, percentiles 2.5 / 97.5).

    >>> get_score("Let me think... My final verdict is: [[B>A]]")
    'B>A'
    >>> get_score("[[A>B]] at first, but finally [[B>>A]]") is None    # two different labels: no score
    True

Files: ``question.jsonl`` ``{"question_id", "category", "cluster", "turns": [{"content"}]}``;
``model_answer/<model>.jsonl`` ``{"question_id", "answer_id", "model_id", "choices": [{"index": 0, "turns":
[{"content", "token_len"}]}], "tstamp"}``; ``model_judgment/<judge>/<model>.jsonl`` ``{"question_id", "model",
"judge", "games": [{"user_prompt", "judgment", "score"}, {...}]}``.
"""

from __future__ import annotations

import hashlib
import re
import time

import numpy as np

from metareward.evals.io import EvalFileError, need, read_jsonl, write_jsonl
from metareward.method.scoring import bradley_terry, elo

BASELINE = "gpt-4-0314"
WEIGHT = 3
REGEX = re.compile(r"\[\[([AB<>=]+)\]\]")

# arena-hard-auto config/judge_config.yaml (v0.1), verbatim.
SYSTEM_PROMPT = (
    "Please act as an impartial judge and evaluate the quality of the responses provided by two AI assistants to the "
    "user prompt displayed below. You will be given assistant A's answer and assistant B's answer. Your job is to "
    "evaluate which assistant's answer is better.\n\nBegin your evaluation by generating your own answer to the "
    "prompt. You must provide your answers before judging any answers.\n\nWhen evaluating the assistants' answers, "
    "compare both assistants' answers with your answer. You must identify and correct any mistakes or inaccurate "
    "information.\n\nThen consider if the assistant's answers are helpful, relevant, and concise. Helpful means the "
    "answer correctly responds to the prompt or follows the instructions. Note when user prompt has any ambiguity or "
    "more than one interpretation, it is more helpful and appropriate to ask for clarifications or more information "
    "from the user than providing an answer based on assumptions. Relevant means all parts of the response closely "
    "connect or are appropriate to what is being asked. Concise means the response is clear and not verbose or "
    "excessive.\n\nThen consider the creativity and novelty of the assistant's answers when needed. Finally, "
    "identify any missing important information in the assistants' answers that would be beneficial to include when "
    "responding to the user prompt.\n\nAfter providing your explanation, you must output only one of the following "
    "choices as your final verdict with a label:\n\n1. Assistant A is significantly better: [[A>>B]]\n2. Assistant A "
    "is slightly better: [[A>B]]\n3. Tie, relatively the same: [[A=B]]\n4. Assistant B is slightly better: "
    "[[B>A]]\n5. Assistant B is significantly better: [[B>>A]]\n\nExample output: \"My final verdict is tie: "
    "[[A=B]]\".")
PROMPT_TEMPLATE = ("<|User Prompt|>\n{question_1}\n\n<|The Start of Assistant A's Answer|>\n{answer_1}\n<|The End of "
                   "Assistant A's Answer|>\n\n<|The Start of Assistant B's Answer|>\n{answer_2}\n<|The End of "
                   "Assistant B's Answer|>")
# The follow-up arena-hard-auto sends when a judgment has no label (number_of_judgment_attempts = 2).
CONTINUE = "continue your judgment and finish by outputting a final verdict label"

# (winner, weight) of each label, seen from the game's own positions: A won, B won, or a tie.
_LABELS = {"A>>B": ("A", WEIGHT), "A>B": ("A", 1), "A=B": ("tie", 1), "B>A": ("B", 1), "B>>A": ("B", WEIGHT)}


def get_score(judgment: str) -> str | None:
    """``gen_judgment.get_score``: the label when every ``[[...]]`` label in the text agrees, else None."""
    matches = {m for m in REGEX.findall(judgment) if m != ""}
    return next(iter(matches)).strip("\n") if len(matches) == 1 else None


def render(question: str, answer_1: str, answer_2: str) -> tuple[str, str]:
    """(system, user) for one game; answer_1 is shown as assistant A."""
    return SYSTEM_PROMPT, PROMPT_TEMPLATE.format(question_1=question, answer_1=answer_1, answer_2=answer_2)


# --------------------------------------------------------------------------------------------- battles


def battles(judgments: list[dict], first_game_only: bool = False) -> list[tuple[str, str]]:
    """v0.1 ``get_battles_from_judgment``: (model, winner) rows, winner in {"baseline", "model", "tie"}, each
    repeated by its weight, in file order. Game 1 has the baseline as A; game 2 has the model as A. Labels other
    than the five (None, "A<B", ...) give no battle."""
    out = []
    for row in judgments:
        for g, game in enumerate(row["games"][:1] if first_game_only else row["games"][:2]):
            label = game.get("score") if isinstance(game, dict) else None
            if label not in _LABELS:
                continue
            winner, weight = _LABELS[label]
            if winner != "tie":  # A is the baseline in game 1 and the model in game 2
                winner = "baseline" if (winner == "A") == (g == 0) else "model"
            out += [(row["model"], winner)] * weight
    return out


def _battle_matrix(rows: list[tuple[str, str]], names: list[str]) -> np.ndarray:
    """B[i, j]: the logistic regression's weight of "i beat j". compute_mle_elo duplicates every battle and
    codes a tie as one win for each side, so a win counts 2 and a tie 1 + 1 (the scale does not move the MLE)."""
    idx = {n: i for i, n in enumerate(names)}
    B = np.zeros((len(names), len(names)))
    for model, winner in rows:
        m, b = idx[model], idx[BASELINE]
        if winner == "model":
            B[m, b] += 2
        elif winner == "baseline":
            B[b, m] += 2
        else:
            B[m, b] += 1
            B[b, m] += 1
    return B


def mle_elo(rows: list[tuple[str, str]], models: list[str]) -> np.ndarray:
    """``compute_mle_elo``: Bradley-Terry MLE (no penalty) on the Elo scale, the baseline anchored at 1000.
    Returns one rating per entry of ``[BASELINE] + models``. A model that never loses (or never wins) has no
    finite MLE; the fit stops after 100 Newton steps with a large finite rating, as sklearn's lbfgs stops."""
    names = [BASELINE] + models
    e = elo(bradley_terry(_battle_matrix(rows, names), l2=0.0))
    return e - e[0] + 1000.0


def win_rate(rating: float, baseline: float = 1000.0) -> float:
    """``predict_win_rate`` against the baseline, in %, rounded to 2 decimals as ``get_win_rate_column``."""
    return round(100.0 / (1.0 + 10.0 ** ((baseline - rating) / 400.0)), 2)


def score(judgments: list[dict], rounds: int = 100, seed: int = 42, first_game_only: bool = False) -> dict:
    """Score and 95% interval of each model against the baseline, like v0.1 ``show_result.py``.

    Bootstrap: with ``np.random.seed(seed)`` each round draws ``len(battles)`` rows with replacement (pandas'
    ``sample(frac=1.0, replace=True)`` is ``RandomState.choice`` over the row positions) and refits.
    """
    rows = battles(judgments, first_game_only)
    models = sorted({m for m, _ in rows} - {BASELINE})  # a model with no valid battle has no rating
    if not rows:
        raise ValueError("no valid battle: every game's verdict is missing or unparseable")
    point = mle_elo(rows, models)
    rs = np.random.RandomState(seed)
    boot = np.array([mle_elo([rows[i] for i in rs.choice(len(rows), size=len(rows), replace=True)], models)
                     for _ in range(rounds)])
    out = {}
    for k, m in enumerate(models, start=1):
        s = win_rate(point[k])
        lo, hi = win_rate(float(np.percentile(boot[:, k], 2.5))), win_rate(float(np.percentile(boot[:, k], 97.5)))
        out[m] = {"score": s, "ci_low": lo, "ci_high": hi, "n_battles": sum(1 for x, _ in rows if x == m),
                  "display": f"{s:.1f} ({round(lo - s, 1):+.1f}, {round(hi - s, 1):+.1f})"}
    return out


# --------------------------------------------------------------------------------------------- files


def read_judgments(path: str) -> list[dict]:
    rows = []
    for lineno, row in read_jsonl(path):
        need(row, "question_id", path, lineno, (int, str))
        need(row, "model", path, lineno, str)
        games = need(row, "games", path, lineno, list)
        if not all(g is None or isinstance(g, dict) for g in games):
            raise EvalFileError(f"{path}: line {lineno}: 'games' must be a list of objects")
        rows.append(row)
    return rows


def judgment_row(question_id, model: str, judge: str, games: list[tuple[str, str, str | None]]) -> dict:
    """games: (user_prompt, judgment, label) for game 1 (baseline as A) and game 2 (model as A)."""
    return {"question_id": question_id, "model": model, "judge": judge,
            "games": [{"user_prompt": u, "judgment": j, "score": s} for u, j, s in games]}


def read_questions(path: str) -> list[dict]:
    """{question_id, turns: [{content}], ...}; returns rows with 'prompt' = the first turn's content."""
    out = []
    for lineno, row in read_jsonl(path):
        turns = need(row, "turns", path, lineno, list)
        if not turns or not isinstance(turns[0], dict) or not isinstance(turns[0].get("content"), str):
            raise EvalFileError(f"{path}: line {lineno}: 'turns' must be [{{\"content\": \"...\"}}, ...]")
        out.append({**row, "prompt": turns[0]["content"]})
    return out


def read_answers(path: str) -> dict:
    """question_id -> the first turn's content."""
    out = {}
    for lineno, row in read_jsonl(path):
        choices = need(row, "choices", path, lineno, list)
        try:
            out[need(row, "question_id", path, lineno, (int, str))] = choices[0]["turns"][0]["content"]
        except (IndexError, KeyError, TypeError):
            raise EvalFileError(f"{path}: line {lineno}: expected choices[0].turns[0].content") from None
    return out


def answer_row(question_id, model_id: str, content: str, token_len: int, tstamp: float | None = None) -> dict:
    answer_id = hashlib.sha256(f"{model_id}|{question_id}|{content}".encode()).hexdigest()[:22]
    return {"question_id": question_id, "answer_id": answer_id, "model_id": model_id,
            "choices": [{"index": 0, "turns": [{"content": content, "token_len": token_len}]}],
            "tstamp": time.time() if tstamp is None else tstamp}


def write_rows(path: str, rows: list[dict]) -> str:
    return write_jsonl(path, rows)
