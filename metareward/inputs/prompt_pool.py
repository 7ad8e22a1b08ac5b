"""Prompt-pool generation: a model writes new prompts from k-shot examples of seed prompts (method.md 8).

Self-Rewarding's 20k training prompts were written by Llama-2-70B-Chat from 8 human prompts at a time. Each
request here is the OXEN template followed by k seed prompts drawn at random (seeded), each in a
``<task>...</task>`` tag; the model is expected to continue the list::

    Come up with a series of tasks and questions. Only the task/question, no further text/explanation, no
    additional information. The task or question should be something a person would ask a chatbot.
    <task>Why do cats purr?</task>
    <task>Write a haiku about the ocean.</task>

    -> "<task>How do bees make honey?</task>\\n<task>Name three uses of baking soda.</task>"
    -> parse_tasks: ["How do bees make honey?", "Name three uses of baking soda."]

The parsed prompts then go through `prompt_sources.clean` with the seeds as the reference set (exact and
near-duplicates of seeds or of each other, length, benchmark overlap).
"""

from __future__ import annotations

import random
import re

from metareward.records import Prompt

INSTRUCTION = (
    "Come up with a series of tasks and questions. Only the task/question, no further text/explanation, no "
    "additional information. The task or question should be something a person would ask a chatbot."
)
_TASK = re.compile(r"<task>(.*?)</task>", re.S | re.I)
_TAG = re.compile(r"</?task>", re.I)
_LIST_MARKER = re.compile(r"^\s*(?:(?:[-*\u2022]|\d+[.)]|task\s*\d*\s*:)\s*)+", re.I)


def render(examples: list[str]) -> str:
    """The generation request for one set of k-shot examples."""
    return INSTRUCTION + "\n" + "\n".join(f"<task>{e}</task>" for e in examples)


def draw_examples(seeds: list[Prompt], requests: int, k: int, seed: int) -> list[list[Prompt]]:
    """``requests`` sets of min(k, len(seeds)) distinct seeds each, from one seeded RNG (reproducible)."""
    if not seeds:
        raise ValueError("prompt_pool: no seed prompts to draw k-shot examples from")
    rng = random.Random(seed)
    k = min(k, len(seeds))
    return [rng.sample(seeds, k) for _ in range(requests)]


def parse_tasks(text: str, mode: str = "tags") -> list[str]:
    """The prompts in one completion: every closed ``<task>...</task>`` (an unclosed last tag is a truncated
    prompt and is dropped). ``mode='lines'`` also takes every other non-empty line, with tags and list markers
    ("1.", "-", "Task 3:") stripped: small models rarely keep to the tags."""
    tasks = [t.strip() for t in _TASK.findall(text)]
    if mode == "lines":
        rest = _TASK.sub("\n", text)
        cut = rest.lower().find("<task>")
        if cut >= 0:  # an unclosed tag: what follows it was cut off mid-prompt
            rest = rest[:cut]
        tasks += [_LIST_MARKER.sub("", _TAG.sub("", line)).strip() for line in rest.splitlines()]
    elif mode != "tags":
        raise ValueError(f"unknown parse mode {mode!r}; expected 'tags' or 'lines'")
    return [t for t in tasks if t]


def new_prompts(texts: list[str]) -> list[Prompt]:
    """Generated prompts with ids ``g00000``, ``g00001``, ... in generation order."""
    return [Prompt(id=f"g{i:05d}", prompt=t) for i, t in enumerate(texts)]
