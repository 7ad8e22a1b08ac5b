"""Decontamination: drop training prompts that overlap benchmark questions (AlpacaEval, Arena-Hard, MT-Bench).

Self-generated prompts drift towards benchmark-like questions, and a prompt that *is* a benchmark question
turns the benchmark into a training-set score. The rule is the word n-gram overlap test of GPT-3 / Llama 2,
with a shorter n because prompts are short:

- a prompt is contaminated by a benchmark if it shares one word ``n``-gram (default 8, after lower-casing
  and dropping punctuation) with one of its questions, or
- if it contains a whole benchmark question shorter than ``n`` words (``"What is the capital of France?"``
  has 6 words and is matched anywhere inside a prompt).

Example (n=4): the question "Write a haiku about the ocean at night" has the 4-grams "write a haiku about",
"a haiku about the", "haiku about the ocean", "about the ocean at", "the ocean at night"; the prompt "Please
write a haiku about the sea" shares "write a haiku about" and is dropped; "Write a poem about the ocean" shares
none and is kept.

Question files are the benchmarks' own, given as local paths: JSON (a list of rows, e.g. AlpacaEval's
``alpaca_eval.json``) or JSONL (Arena-Hard's and MT-Bench's ``question.jsonl``). A row is a string or an
object with ``instruction``, ``prompt``, ``question`` or ``turns`` (strings or ``{"content": ...}``); every
turn of a multi-turn question counts.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from metareward.inputs.jsonl import json_lines
from metareward.inputs.prompt_sets import PromptFileError

_WORD = re.compile(r"\w+")
TEXT_KEYS = ("instruction", "prompt", "question", "turns")


class BenchmarkFileError(PromptFileError):
    """A bad benchmark question file; the message names the file and line."""


def words(text: str) -> tuple[str, ...]:
    return tuple(_WORD.findall(text.lower()))


def _row_texts(row, where: str) -> list[str]:
    if isinstance(row, str):
        return [row]
    if isinstance(row, dict):
        for key in TEXT_KEYS:
            value = row.get(key)
            if isinstance(value, str):
                return [value]
            if isinstance(value, list):
                texts = [v if isinstance(v, str) else v.get("content") if isinstance(v, dict) else None
                         for v in value]
                if texts and all(isinstance(t, str) for t in texts):
                    return texts
    raise BenchmarkFileError(f"{where}: expected a string or an object with one of {', '.join(TEXT_KEYS)}")


def read_questions(path: str) -> list[str]:
    """Every question text (every turn) of a benchmark question file, JSON or JSONL."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise BenchmarkFileError(f"{path}: no such benchmark question file")
    text = p.read_text(encoding="utf-8")
    if text.lstrip().startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as e:
            raise BenchmarkFileError(f"{p}: line {e.lineno}: invalid JSON ({e.msg})") from None
        return [t for i, row in enumerate(rows) for t in _row_texts(row, f"{p}: item {i}")]
    out = []
    for lineno, row in json_lines(text, str(p), BenchmarkFileError, objects=False):
        out += _row_texts(row, f"{p}: line {lineno}")
    if not out:
        raise BenchmarkFileError(f"{p}: no questions")
    return out


@dataclass
class NgramIndex:
    """The word n-grams of one benchmark's questions, and its questions shorter than n words."""

    n: int
    grams: set[tuple[str, ...]] = field(default_factory=set)
    short: set[tuple[str, ...]] = field(default_factory=set)

    @classmethod
    def build(cls, questions: list[str], n: int = 8) -> NgramIndex:
        index = cls(n)
        for q in questions:
            w = words(q)
            if len(w) >= n:
                index.grams.update(w[i : i + n] for i in range(len(w) - n + 1))
            elif w:
                index.short.add(w)
        return index

    def overlaps(self, text: str) -> bool:
        w = words(text)
        if any(w[i : i + self.n] in self.grams for i in range(len(w) - self.n + 1)):
            return True
        for size in {len(s) for s in self.short}:
            if any(w[i : i + size] in self.short for i in range(len(w) - size + 1)):
                return True
        return False


def load_indexes(benchmarks: dict[str, str], n: int) -> dict[str, NgramIndex]:
    """One index per named benchmark question file (names sorted, so counts come out in a stable order)."""
    return {name: NgramIndex.build(read_questions(path), n) for name, path in sorted(benchmarks.items())}


def decontaminate(texts: list[str], indexes: dict[str, NgramIndex]) -> tuple[list[int], dict[str, int]]:
    """Indices of the texts that overlap no benchmark, and how many overlap each benchmark (a text overlapping
    two benchmarks counts in both) plus ``total`` removed."""
    keep, counts = [], {name: 0 for name in indexes}
    removed = 0
    for i, t in enumerate(texts):
        hits = [name for name, index in indexes.items() if index.overlaps(t)]
        for name in hits:
            counts[name] += 1
        if hits:
            removed += 1
        else:
            keep.append(i)
    return keep, {**counts, "total": removed}
