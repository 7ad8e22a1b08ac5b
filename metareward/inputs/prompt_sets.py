"""Prompt files: reading, de-duplication, the held-out split and per-iteration sampling.

A prompt file is JSONL with one ``{"id": "...", "prompt": "..."}`` per line (``id`` optional: the line number
is used). Per-iteration sampling follows the paper (5,000 of 20,000 per iteration): one seeded permutation of
the training prompts, iteration t takes the t-th slice, so no prompt is reused across iterations until the
pool is exhausted (then the permutation wraps around).
"""

from __future__ import annotations

import random
from importlib import resources
from pathlib import Path

from metareward.inputs.jsonl import json_lines
from metareward.records import Prompt

SMOKE_PROMPTS = "smoke_prompts.jsonl"


class PromptFileError(ValueError):
    pass


def read_prompt_file(path: str | None) -> tuple[list[Prompt], str]:
    """Rows of a prompt file (None = the shipped smoke set) and a name for messages."""
    if path is None:
        res = resources.files("metareward.data") / SMOKE_PROMPTS
        return _parse(res.read_bytes(), f"metareward/data/{SMOKE_PROMPTS}"), SMOKE_PROMPTS
    p = Path(path).expanduser()
    if p.is_dir():
        raise PromptFileError(f"prompts.path {path}: is a folder, expected a file")
    if not p.is_file():
        raise PromptFileError(f"prompts.path {path}: no such file")
    return _parse(p.read_bytes(), str(p)), str(p)


def _parse(data: bytes, where: str) -> list[Prompt]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise PromptFileError(f"{where}: line {line}: not UTF-8 text") from None
    rows = []
    for lineno, obj in json_lines(text, where, PromptFileError, objects=False):
        if not isinstance(obj, dict) or not isinstance(obj.get("prompt"), str) or not obj["prompt"].strip():
            raise PromptFileError(f"{where}: line {lineno}: expected an object with a non-empty 'prompt' string")
        rows.append(Prompt(id=str(obj.get("id", f"line{lineno}")), prompt=obj["prompt"].strip()))
    if not rows:
        raise PromptFileError(f"{where}: no prompts")
    return rows


def dedupe(prompts: list[Prompt]) -> tuple[list[Prompt], int]:
    """Drop exact duplicates (after whitespace/case normalisation) and repeated ids; keep the first."""
    seen_text, seen_id, out = set(), set(), []
    for p in prompts:
        norm = " ".join(p.prompt.lower().split())
        if norm in seen_text or p.id in seen_id:
            continue
        seen_text.add(norm)
        seen_id.add(p.id)
        out.append(p)
    return out, len(prompts) - len(out)


def split_eval(prompts: list[Prompt], eval_count: int) -> tuple[list[Prompt], list[Prompt]]:
    """The last ``eval_count`` prompts are held out for the benchmark stage and never trained on."""
    if eval_count >= len(prompts):
        raise PromptFileError(f"prompts.eval_count={eval_count} leaves no training prompt of {len(prompts)}")
    cut = len(prompts) - eval_count
    return prompts[:cut], prompts[cut:]


def for_iteration(train: list[Prompt], t: int, per_iteration: int | None, seed: int) -> list[Prompt]:
    """Iteration t's prompts: the t-th slice of one seeded permutation (all prompts when per_iteration is None)."""
    if per_iteration is None or per_iteration >= len(train):
        return list(train)
    order = list(range(len(train)))
    random.Random(seed).shuffle(order)
    start = ((t - 1) * per_iteration) % len(train)
    idx = [order[(start + i) % len(train)] for i in range(per_iteration)]
    return [train[i] for i in sorted(idx)]


def reused_count(n_train: int, t: int, per_iteration: int | None) -> int:
    """How many of iteration t's prompts an earlier iteration already used: 0 until the permutation is
    exhausted (10 prompts, 3 per iteration: iteration 4 takes positions 9, 10, 11 -> 2 wrap around)."""
    k = n_train if per_iteration is None or per_iteration >= n_train else per_iteration
    used_before = (t - 1) * k
    return k if used_before >= n_train else max(0, used_before + k - n_train)
