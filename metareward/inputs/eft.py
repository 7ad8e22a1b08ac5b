"""Evaluation fine-tuning (EFT) data: teach the seed model to judge before iteration 1 (method.md 2 and 8).

Input: Open Assistant conversations whose first assistant replies were ranked by humans (``rank`` 0 = best),
as JSONL in either OASST export format:

- message trees (``2023-04-12_oasst_ready.trees.jsonl``): one tree per line,
  ``{"message_tree_id": "t1", "prompt": {"message_id": "m1", "role": "prompter", "text": "...",
  "replies": [{"message_id": "m2", "role": "assistant", "text": "...", "rank": 0, "replies": [...]}, ...]}}``
- flat messages (the ``OpenAssistant/oasst1`` dataset rows): one message per line with ``message_id``,
  ``parent_id`` (null for the prompt), ``role``, ``text``, ``rank``.

Only the first turn is used (the judge prompt has one user turn): a *group* is a prompt and its ranked
assistant replies. Replies without a rank, deleted ones, and groups with fewer than two ranked replies are
left out and counted.

Output: judge-prompt -> judgment examples whose scores rank each group's replies as the humans did. Example,
one group with replies ranked 0, 1, 2 in ``rubric`` mode with top score 5::

    reply rank 0 -> "...(five rubric points)...\\nScore: 5"
    reply rank 1 -> "...(four rubric points)...\\nScore: 4"
    reply rank 2 -> "...(three rubric points)...\\nScore: 3"

In ``generate`` mode (Self-Rewarding) the seed model's own judgments are used instead, and a group is kept
only if one judgment per reply can be picked whose scores strictly decrease with the human rank
(`select_consistent`). Then the most common score is down-sampled (`downsample_most_common`), and the judge's
pairwise agreement with held-out human rankings is measured before and after SFT (`pairwise_agreement`).
"""

from __future__ import annotations

import hashlib
import random
from collections import Counter
from importlib import resources
from pathlib import Path

from pydantic import BaseModel

from metareward.inputs.prompt_sets import PromptFileError
from metareward.method.prompts import render_judge
from metareward.records import Record, Response

SMOKE_RANKED = "eft_ranked.jsonl"
# The rubric's five criteria as findings, one per point: a 'rubric'-mode judgment of score s states the first s.
CRITERIA = [
    "The response is relevant and provides some information related to the user's inquiry.",
    "It addresses a substantial portion of the user's question.",
    "It answers the basic elements of the user's question in a useful way.",
    "It is written from an AI Assistant's perspective, addresses the question directly and comprehensively, and "
    "is well-organized and helpful.",
    "It is impeccably tailored to the question, without extraneous information, and reflects expert knowledge in "
    "an engaging, insightful answer.",
]


class RankedFileError(PromptFileError):
    """A bad ranked-replies file; the message names the file and line."""


class RankedReply(BaseModel):
    id: str
    text: str
    rank: int


class RankedGroup(BaseModel):
    """One prompt and its human-ranked first replies (rank 0 = best)."""

    id: str
    prompt: str
    replies: list[RankedReply]


class EFTExample(Record):
    """One SFT example: the judge prompt for (group prompt, reply) -> a judgment ending in 'Score: N'."""

    group_id: str
    reply_id: str
    rank: int
    score: int
    prompt: str
    completion: str


# ------------------------------------------------------------------------------------------------ reading


def read_ranked_file(path: str | None, lang: str | None = None) -> tuple[list[RankedGroup], dict[str, int], str]:
    """Groups of a ranked file (None = the shipped smoke set), skip counts, and a name for messages."""
    if path is None:
        res = resources.files("metareward.data") / SMOKE_RANKED
        text, where = res.read_text(encoding="utf-8"), f"metareward/data/{SMOKE_RANKED}"
    else:
        from metareward.inputs.prompt_sources import shipped_path

        p = Path(shipped_path(path)).expanduser()
        if not p.is_file():
            raise RankedFileError(f"eft.path {path}: no such file")
        text, where = p.read_text(encoding="utf-8"), str(p)
    rows = _json_lines(text, where)
    if rows and "parent_id" in rows[0][1]:
        groups, skipped = _from_messages(rows, where, lang)
    else:
        groups, skipped = _from_trees(rows, where, lang)
    if not groups:
        raise RankedFileError(f"{where}: no prompt with two or more ranked replies")
    return groups, skipped, where


def _json_lines(text: str, where: str) -> list[tuple[int, dict]]:
    from metareward.inputs.jsonl import json_lines

    return json_lines(text, where, RankedFileError)


def _message(obj, where: str, role: str) -> dict:
    if not isinstance(obj, dict) or not isinstance(obj.get("text"), str) or "message_id" not in obj:
        raise RankedFileError(f"{where}: expected a message with 'message_id' and 'text'")
    if obj.get("role") != role:
        raise RankedFileError(f"{where}: message {obj['message_id']} has role {obj.get('role')!r}, expected {role!r}")
    return obj


def _group(prompt: dict, replies: list[dict], where: str, skipped: Counter) -> RankedGroup | None:
    ranked = []
    for r in replies:
        if r.get("deleted") or r.get("role") != "assistant":
            skipped["replies_deleted_or_not_assistant"] += 1
        elif r.get("rank") is None:
            skipped["replies_unranked"] += 1
        elif not isinstance(r["rank"], int) or isinstance(r["rank"], bool) or r["rank"] < 0:
            raise RankedFileError(f"{where}: reply {r.get('message_id')}: rank must be a non-negative integer")
        else:
            ranked.append(RankedReply(id=str(r["message_id"]), text=r["text"], rank=r["rank"]))
    if len(ranked) < 2:
        skipped["groups_fewer_than_2_ranked"] += 1
        return None
    ranked.sort(key=lambda r: r.rank)
    return RankedGroup(id=str(prompt["message_id"]), prompt=prompt["text"].strip(), replies=ranked)


def _lang_ok(msg: dict, lang: str | None) -> bool:
    return lang is None or msg.get("lang") in (None, lang)


def _from_trees(rows: list[tuple[int, dict]], where: str, lang: str | None) -> tuple[list[RankedGroup], dict]:
    groups, skipped = [], Counter()
    for lineno, row in rows:
        at = f"{where}: line {lineno}"
        prompt = _message(row.get("prompt"), at, "prompter")
        if not _lang_ok(prompt, lang):
            skipped["groups_other_lang"] += 1
            continue
        replies = prompt.get("replies") or []
        if not isinstance(replies, list) or any(not isinstance(r, dict) or not isinstance(r.get("text"), str)
                                                or "message_id" not in r for r in replies):
            raise RankedFileError(f"{at}: 'replies' must be a list of messages with 'message_id' and 'text'")
        g = _group(prompt, replies, at, skipped)
        if g is not None:
            groups.append(g)
    return groups, dict(skipped)


def _from_messages(rows: list[tuple[int, dict]], where: str, lang: str | None) -> tuple[list[RankedGroup], dict]:
    roots, children, line_of = [], {}, {}
    for lineno, row in rows:
        msg = _message(row, f"{where}: line {lineno}", row.get("role"))
        line_of[msg["message_id"]] = lineno
        if msg.get("parent_id") is None:
            roots.append(_message(msg, f"{where}: line {lineno}", "prompter"))
        else:
            children.setdefault(msg["parent_id"], []).append(msg)
    groups, skipped = [], Counter()
    for root in roots:
        if not _lang_ok(root, lang):
            skipped["groups_other_lang"] += 1
            continue
        g = _group(root, children.get(root["message_id"], []), f"{where}: line {line_of[root['message_id']]}",
                   skipped)
        if g is not None:
            groups.append(g)
    return groups, dict(skipped)


def groups_digest(groups: list[RankedGroup]) -> str:
    """Content digest of the groups read (part of the eft stage's key)."""
    return hashlib.sha256("\n".join(g.model_dump_json() for g in groups).encode()).hexdigest()[:16]


def split_groups(groups: list[RankedGroup], eval_fraction: float) -> tuple[list[RankedGroup], list[RankedGroup]]:
    """(train, held out): the last round(fraction x groups) groups, at least one when fraction > 0, are held out."""
    n_eval = 0 if eval_fraction == 0 else max(1, round(eval_fraction * len(groups)))
    if n_eval >= len(groups):
        raise RankedFileError(f"eft.eval_fraction={eval_fraction} leaves no training group of {len(groups)}")
    cut = len(groups) - n_eval
    return groups[:cut], groups[cut:]


def responses(groups: list[RankedGroup]) -> list[Response]:
    """Each reply as a `Response` to its group's prompt, so the judge stage's code can score it."""
    return [Response(id=r.id, prompt_id=g.id, prompt=g.prompt, text=r.text) for g in groups for r in g.replies]


# ------------------------------------------------------------------------------------------- examples


def rubric_judgment(score: int) -> str:
    """A judgment that awards the first ``score`` rubric points, naming each, and ends in 'Score: N'."""
    if score == 0:
        reason = "The response is not relevant to the user's inquiry, so it earns no point."
    else:
        reason = " ".join(CRITERIA[:score])
        if score < 5:
            reason += " It falls short of the next criterion, so it earns " + ("1 point." if score == 1 else
                                                                               f"{score} points.")
    return f"{reason}\nScore: {score}"


def rank_scores(group: RankedGroup, top_score: int) -> dict[str, int]:
    """Best rank -> top_score, each worse distinct rank one point less; replies that would fall below 0 are
    left out (a group with more distinct ranks than points)."""
    levels = sorted({r.rank for r in group.replies})
    return {r.id: top_score - levels.index(r.rank) for r in group.replies if top_score - levels.index(r.rank) >= 0}


def rubric_examples(groups: list[RankedGroup], top_score: int) -> list[EFTExample]:
    out = []
    for g in groups:
        scores = rank_scores(g, top_score)
        for r in g.replies:
            if r.id in scores:
                out.append(EFTExample(group_id=g.id, reply_id=r.id, rank=r.rank, score=scores[r.id],
                                      prompt=render_judge(g.prompt, r.text), completion=rubric_judgment(scores[r.id])))
    return out


def select_consistent(group: RankedGroup, candidates: dict[str, list[tuple[int | None, str]]]) -> dict[str, tuple[int, str]] | None:
    """One (score, judgment) per reply such that a better human rank always has a strictly higher score, or None.

    Greedy from the worst rank up: each reply takes its lowest score above every score chosen for worse ranks
    (the first judgment with that score). Taking the lowest feasible score leaves the most room for the better
    replies, so the greedy finds a consistent choice whenever one exists. Equal human ranks are not ordered.
    """
    chosen: dict[str, tuple[int, str]] = {}
    floor = -1
    for rank in sorted({r.rank for r in group.replies}, reverse=True):
        level_max = floor
        for r in (r for r in group.replies if r.rank == rank):
            ok = [(s, text) for s, text in candidates.get(r.id, []) if s is not None and s > floor]
            if not ok:
                return None
            best = min(ok, key=lambda st: st[0])
            chosen[r.id] = best
            level_max = max(level_max, best[0])
        floor = level_max
    return chosen


def generated_examples(groups: list[RankedGroup], candidates: dict[str, list[tuple[int | None, str]]]) -> tuple[list[EFTExample], int]:
    """Examples from the seed model's judgments, for the groups they can rank as humans did; (examples,
    groups dropped as inconsistent)."""
    out, dropped = [], 0
    for g in groups:
        chosen = select_consistent(g, candidates)
        if chosen is None:
            dropped += 1
            continue
        for r in g.replies:
            score, text = chosen[r.id]
            out.append(EFTExample(group_id=g.id, reply_id=r.id, rank=r.rank, score=score,
                                  prompt=render_judge(g.prompt, r.text), completion=text))
    return out, dropped


def downsample_most_common(rows: list[EFTExample], seed: int) -> tuple[list[EFTExample], int]:
    """Keep a seeded random subset of the most common score's examples, as many as the second most common
    score has (Self-Rewarding: 'down-sample score 4 so the data are not skewed'); order is preserved. With a
    single score there is nothing to balance against and nothing is dropped. Returns (rows, dropped)."""
    counts = Counter(r.score for r in rows).most_common()
    if len(counts) < 2:
        return rows, 0
    (top, n_top), (_, n_second) = counts[0], counts[1]
    idx = [i for i, r in enumerate(rows) if r.score == top]
    keep = set(random.Random(seed).sample(idx, n_second)) | {i for i, r in enumerate(rows) if r.score != top}
    return [r for i, r in enumerate(rows) if i in keep], n_top - n_second


def sft_rows(rows: list[EFTExample]) -> list[dict]:
    """TRL's conversational prompt-completion rows: the loss is on the judgment only."""
    return [{"prompt": [{"role": "user", "content": r.prompt}],
             "completion": [{"role": "assistant", "content": r.completion}]} for r in rows]


# ------------------------------------------------------------------------------------------ agreement


def pairwise_agreement(groups: list[RankedGroup], scores: dict[str, float | None]) -> dict:
    """The judge against the human rankings over every pair of replies with different human ranks.

    A pair agrees when the better-ranked reply has the higher judge score; equal scores are ties and a reply
    without a score makes the pair a tie too. ``agreement`` = agreeing / all pairs (ties count as misses),
    ``agreement_without_ties`` = agreeing / untied pairs (the paper's Table 7 reports both).
    """
    pairs = agree = ties = 0
    for g in groups:
        for i, a in enumerate(g.replies):
            for b in g.replies[i + 1 :]:
                if a.rank == b.rank:
                    continue
                better, worse = (a, b) if a.rank < b.rank else (b, a)
                sb, sw = scores.get(better.id), scores.get(worse.id)
                pairs += 1
                if sb is None or sw is None or sb == sw:
                    ties += 1
                elif sb > sw:
                    agree += 1
    untied = pairs - ties
    return {"pairs": pairs, "agree": agree, "ties": ties,
            "agreement": round(agree / pairs, 4) if pairs else None,
            "agreement_without_ties": round(agree / untied, 4) if untied else None}
