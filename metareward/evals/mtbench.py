"""MT-Bench single-answer grading, as FastChat's ``llm_judge`` does it (``common.py``, ``show_result.py``).

The judge grades each answer 1-10 with one of four templates from FastChat's ``data/judge_prompts.jsonl``
(verbatim below): ``single-v1`` for turn 1, ``single-v1-multi-turn`` for turn 2, and the ``-math`` variants,
which show a reference answer, for the math, reasoning and coding categories. The rating is read with
``\\[\\[(\\d+\\.?\\d*)\\]\\]`` and, failing that, ``\\[(\\d+\\.?\\d*)\\]``; no match gives -1. ``show_result.py``
drops the -1 rows and averages what is left: per turn, and over both turns for the overall score.

    >>> parse_rating("The answer is thorough. Rating: [[8]]")
    8
    >>> parse_rating("I would give it [7.5] out of 10")
    7.5
    >>> parse_rating("no rating here")
    -1

Files, in FastChat's layout (``data/mt_bench/...``):

- ``question.jsonl``: ``{"question_id": 81, "category": "writing", "turns": [q1, q2], "reference": [r1, r2]?}``
- ``model_answer/<model>.jsonl``: ``{"question_id", "answer_id", "model_id", "choices": [{"index": 0,
  "turns": [a1, a2]}], "tstamp"}``
- ``model_judgment/<judge>_single.jsonl``: ``{"question_id", "model", "judge": [judge_model, template_name],
  "user_prompt", "judgment", "score", "turn", "tstamp"}``
"""

from __future__ import annotations

import ast
import hashlib
import re
import time
from dataclasses import dataclass

import numpy as np

from metareward.evals.io import EvalFileError, need, read_jsonl, write_jsonl

NEED_REF_CATS = ("math", "reasoning", "coding")

# FastChat fastchat/llm_judge/common.py
ONE_SCORE_PATTERN = re.compile(r"\[\[(\d+\.?\d*)\]\]")
ONE_SCORE_PATTERN_BACKUP = re.compile(r"\[(\d+\.?\d*)\]")

# FastChat fastchat/llm_judge/data/judge_prompts.jsonl (Apache-2.0), the four single-answer templates verbatim.
_RATE = ('After providing your explanation, you must rate the response on a scale of 1 to 10 by strictly '
         'following this format: "[[rating]]", for example: "Rating: [[5]]".')
TEMPLATES: dict[str, dict[str, str]] = {
    "single-v1": {
        "system_prompt": "You are a helpful assistant.",
        "prompt_template": "[Instruction]\nPlease act as an impartial judge and evaluate the quality of the response "
        "provided by an AI assistant to the user question displayed below. Your evaluation should consider factors "
        "such as the helpfulness, relevance, accuracy, depth, creativity, and level of detail of the response. Begin "
        "your evaluation by providing a short explanation. Be as objective as possible. " + _RATE + "\n\n[Question]\n"
        "{question}\n\n[The Start of Assistant's Answer]\n{answer}\n[The End of Assistant's Answer]",
    },
    "single-math-v1": {
        "system_prompt": "You are a helpful assistant.",
        "prompt_template": "[Instruction]\nPlease act as an impartial judge and evaluate the quality of the response "
        "provided by an AI assistant to the user question displayed below. Your evaluation should consider "
        "correctness and helpfulness. You will be given a reference answer and the assistant's answer. Begin your "
        "evaluation by comparing the assistant's answer with the reference answer. Identify and correct any "
        "mistakes. Be as objective as possible. " + _RATE + "\n\n[Question]\n{question}\n\n[The Start of Reference "
        "Answer]\n{ref_answer_1}\n[The End of Reference Answer]\n\n[The Start of Assistant's Answer]\n{answer}\n"
        "[The End of Assistant's Answer]",
    },
    "single-v1-multi-turn": {
        "system_prompt": "Please act as an impartial judge and evaluate the quality of the response provided by an AI "
        "assistant to the user question displayed below. Your evaluation should consider factors such as the "
        "helpfulness, relevance, accuracy, depth, creativity, and level of detail of the response. You evaluation "
        "should focus on the assistant's answer to the second user question. Begin your evaluation by providing a "
        "short explanation. Be as objective as possible. " + _RATE + "\n\n",
        "prompt_template": "<|The Start of Assistant A's Conversation with User|>\n\n### User:\n{question_1}\n\n"
        "### Assistant A:\n{answer_1}\n\n### User:\n{question_2}\n\n### Assistant A:\n{answer_2}\n\n"
        "<|The End of Assistant A's Conversation with User|>",
    },
    "single-math-v1-multi-turn": {
        "system_prompt": "Please act as an impartial judge and evaluate the quality of the response provided by an AI "
        "assistant to the user question. Your evaluation should consider correctness and helpfulness. You will be "
        "given a reference answer and the assistant's answer. You evaluation should focus on the assistant's answer "
        "to the second question. Begin your evaluation by comparing the assistant's answer with the reference "
        "answer. Identify and correct any mistakes. Be as objective as possible. " + _RATE + "\n\n",
        "prompt_template": "<|The Start of Reference Answer|>\n\n### User:\n{question_1}\n\n### Reference answer:\n"
        "{ref_answer_1}\n\n### User:\n{question_2}\n\n### Reference answer:\n{ref_answer_2}\n\n<|The End of "
        "Reference Answer|>\n\n\n<|The Start of Assistant A's Conversation with User|>\n\n### User:\n{question_1}\n\n"
        "### Assistant A:\n{answer_1}\n\n### User:\n{question_2}\n\n### Assistant A:\n{answer_2}\n\n<|The End of "
        "Assistant A's Conversation with User|>",
    },
}
# What a local judge in `expected` mode is made to have written before the rating digits.
RATING_PREFIX = "Rating: [["


@dataclass(frozen=True)
class Question:
    question_id: int | str
    category: str
    turns: list[str]
    reference: list[str] | None = None

    def to_json(self) -> dict:
        d = {"question_id": self.question_id, "category": self.category, "turns": list(self.turns)}
        if self.reference is not None:
            d["reference"] = list(self.reference)
        return d


# --------------------------------------------------------------------------------------------- parsing


def parse_rating(judgment: str) -> int | float:
    """FastChat's rating: ``[[x]]``, else ``[x]``, first match, ``ast.literal_eval``'d; -1 when neither."""
    match = ONE_SCORE_PATTERN.search(judgment) or ONE_SCORE_PATTERN_BACKUP.search(judgment)
    return ast.literal_eval(match.groups()[0]) if match else -1


# --------------------------------------------------------------------------------------------- prompts


def template_name(category: str, turn: int) -> str:
    base = "single-math-v1" if category in NEED_REF_CATS else "single-v1"
    return base + ("-multi-turn" if turn == 2 else "")


def render_single(q: Question, answers: list[str], turn: int) -> tuple[str, str, str]:
    """(template name, system prompt, user prompt) for grading ``answers`` to ``q`` at ``turn`` (1 or 2)."""
    name = template_name(q.category, turn)
    kwargs: dict[str, str] = {}
    if q.category in NEED_REF_CATS:
        if not q.reference:
            raise ValueError(f"question {q.question_id} ({q.category}) needs a reference answer for grading")
        kwargs["ref_answer_1"] = q.reference[0]
        if turn == 2:
            kwargs["ref_answer_2"] = q.reference[1]
    tpl = TEMPLATES[name]
    if turn == 2:
        user = tpl["prompt_template"].format(question_1=q.turns[0], question_2=q.turns[1], answer_1=answers[0],
                                             answer_2=answers[1], **kwargs)
    else:
        user = tpl["prompt_template"].format(question=q.turns[0], answer=answers[0], **kwargs)
    return name, tpl["system_prompt"], user


# --------------------------------------------------------------------------------------------- files


def read_questions(path: str) -> list[Question]:
    out = []
    for lineno, row in read_jsonl(path):
        turns = need(row, "turns", path, lineno, list)
        if not turns or not all(isinstance(t, str) for t in turns):
            raise EvalFileError(f"{path}: line {lineno}: 'turns' must be a non-empty list of strings")
        ref = row.get("reference")
        if ref is not None and not (isinstance(ref, list) and all(isinstance(r, str) for r in ref)):
            raise EvalFileError(f"{path}: line {lineno}: 'reference' must be a list of strings")
        out.append(Question(need(row, "question_id", path, lineno, (int, str)),
                            need(row, "category", path, lineno, str), turns, ref))
    return out


def write_questions(path: str, questions: list[Question]) -> str:
    return write_jsonl(path, [q.to_json() for q in questions])


def read_answers(path: str) -> dict[int | str, list[str]]:
    """question_id -> the answer turns (``choices[0].turns``), as FastChat's ``load_model_answers`` keys them."""
    out = {}
    for lineno, row in read_jsonl(path):
        choices = need(row, "choices", path, lineno, list)
        if not choices or not isinstance(choices[0], dict) or not isinstance(choices[0].get("turns"), list):
            raise EvalFileError(f"{path}: line {lineno}: 'choices' must be [{{\"turns\": [...]}}, ...]")
        out[need(row, "question_id", path, lineno, (int, str))] = list(choices[0]["turns"])
    return out


def answer_row(question_id, model_id: str, turns: list[str], tstamp: float | None = None) -> dict:
    """One ``model_answer`` row; answer_id is a digest of the content (FastChat uses a random shortuuid)."""
    answer_id = hashlib.sha256(f"{model_id}|{question_id}|{turns}".encode()).hexdigest()[:22]
    return {"question_id": question_id, "answer_id": answer_id, "model_id": model_id,
            "choices": [{"index": 0, "turns": list(turns)}], "tstamp": time.time() if tstamp is None else tstamp}


def write_answers(path: str, model_id: str, answers: dict, tstamp: float | None = None) -> str:
    return write_jsonl(path, [answer_row(qid, model_id, turns, tstamp) for qid, turns in answers.items()])


def judgment_row(question_id, model: str, judge_model: str, template: str, user_prompt: str, judgment: str,
                 score: int | float, turn: int, tstamp: float | None = None) -> dict:
    return {"question_id": question_id, "model": model, "judge": [judge_model, template], "user_prompt": user_prompt,
            "judgment": judgment, "score": score, "turn": turn, "tstamp": time.time() if tstamp is None else tstamp}


def read_judgments(path: str) -> list[dict]:
    """The rows of a ``*_single.jsonl`` file, checked for the fields scoring needs."""
    rows = []
    for lineno, row in read_jsonl(path):
        score = need(row, "score", path, lineno)
        if isinstance(score, bool) or not isinstance(score, (int, float)):
            raise EvalFileError(f"{path}: line {lineno}: field 'score' must be a number, got {score!r}")
        turn = need(row, "turn", path, lineno, int)
        if turn not in (1, 2):
            raise EvalFileError(f"{path}: line {lineno}: field 'turn' must be 1 or 2, got {turn}")
        need(row, "question_id", path, lineno, (int, str))
        need(row, "model", path, lineno, str)
        rows.append(row)
    return rows


# --------------------------------------------------------------------------------------------- scoring


def _mean(xs: list[float]) -> float | None:
    return float(np.mean(xs)) if xs else None


def score(judgments: list[dict], categories: dict | None = None) -> dict:
    """``show_result.py --mode single`` for one model: drop score == -1, mean per turn and over both turns.

    ``categories`` (question_id -> category, from question.jsonl) adds the per-category means over both turns,
    the numbers behind FastChat's radar plot.
    """
    models = sorted({r["model"] for r in judgments})
    if len(models) > 1:
        raise ValueError(f"judgments of {len(models)} models ({', '.join(models)}); score one model at a time")
    valid = [r for r in judgments if r["score"] != -1]
    out = {"model": models[0] if models else None,
           "score": _mean([r["score"] for r in valid]),
           "turn_1": _mean([r["score"] for r in valid if r["turn"] == 1]),
           "turn_2": _mean([r["score"] for r in valid if r["turn"] == 2]),
           "n": len(valid), "n_failed": len(judgments) - len(valid)}
    if categories is not None:
        by_cat: dict[str, list[float]] = {}
        for r in valid:
            by_cat.setdefault(categories.get(r["question_id"], "unknown"), []).append(r["score"])
        out["categories"] = {c: _mean(v) for c, v in sorted(by_cat.items())}
    return out


def select_model(judgments: list[dict], model: str | None) -> list[dict]:
    """The rows of one model; with ``model`` None the file must hold exactly one."""
    if model is None:
        return judgments
    rows = [r for r in judgments if r["model"] == model]
    if not rows:
        raise ValueError(f"no judgments of model {model!r}; the file has {sorted({r['model'] for r in judgments})}")
    return rows
