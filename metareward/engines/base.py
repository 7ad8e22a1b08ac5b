"""The one interface every generation backend implements.

A request is a single user turn (plain text); the engine applies the model's chat template. Two operations
cover all three roles:

- ``generate(prompts, n, sampling, seed)``: n sampled completions per prompt (actor, judge, meta-judge);
  ``seed`` is one seed per prompt (or an int, expanded by `prompt_seeds`), and sample ``j`` of prompt ``i``
  draws from its own random stream ``seed[i] + j`` (vLLM's own rule for the children of an n > 1 request).
  Callers space the seeds at least ``n`` apart, so no two samples of a call share a stream, and a sample's
  text depends on its own seed, not on which other prompts shared its call, batch or replica;
- ``choice_probs(prompts, prefixes, choices)``: after the assistant has written ``prefix`` (e.g. a
  justification followed by ``"Score: "``), the probability of each choice string (``"0".."5"`` or
  ``"A"/"B"``), renormalised over the choices. This is the ``expected`` scoring mode.

Anything more an engine can do it declares in ``capabilities`` (names from `CAPABILITIES`, each with the members it
brings); callers ask `can(engine, name)` instead of probing for methods. An engine without the declaration can
do none of them.

    >>> class Plain:
    ...     capabilities = frozenset({COUNTS_PROMPT_TOKENS})
    >>> can(Plain(), COUNTS_PROMPT_TOKENS), can(Plain(), CHATS), can(object(), CHATS)
    (True, False, False)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol, TypeVar, runtime_checkable

Seeds = int | Sequence[int]
R = TypeVar("R")

# What an engine may do beyond generate / choice_probs / close: the name it declares, and the members that brings.
COUNTS_PROMPT_TOKENS = "counts_prompt_tokens"  # its context length and each prompt's tokens (the context check)
SCORES_WHILE_GENERATING = "scores_while_generating"  # choice probabilities read on the KV cache that wrote a sample
CHATS = "chats"  # generation from whole message lists (multi-turn benchmarks)
RUNS_TOGETHER = "runs_together"  # several callers' jobs in one scheduler at once (vLLM)
CAPABILITIES: dict[str, tuple[str, ...]] = {
    COUNTS_PROMPT_TOKENS: ("context_length", "prompt_tokens"),
    SCORES_WHILE_GENERATING: ("generate_scored",),
    CHATS: ("generate_chat",),
    RUNS_TOGETHER: ("run_together",),
}


def can(engine, capability: str) -> bool:
    """Whether ``engine`` declares ``capability`` (one of `CAPABILITIES`)."""
    if capability not in CAPABILITIES:
        raise KeyError(f"unknown engine capability {capability!r}; known: {', '.join(CAPABILITIES)}")
    return capability in getattr(engine, "capabilities", frozenset())


@dataclass(frozen=True)
class Sampling:
    temperature: float = 0.8
    top_p: float = 0.95
    max_new_tokens: int = 256


@dataclass(frozen=True)
class Completion:
    text: str
    n_tokens: int
    finish_reason: str  # "stop" (end of turn) or "length" (hit max_new_tokens)


def prompt_seeds(seed: Seeds, count: int, n: int) -> list[int]:
    """One seed per prompt: a list is checked and returned as is; an int ``s`` gives ``s + i * n`` for prompt
    ``i``, so sample ``j`` of prompt ``i`` draws from the stream ``s + i * n + j``, distinct within the call.

    >>> prompt_seeds(10, 3, 2)
    [10, 12, 14]
    """
    if isinstance(seed, int):
        return [seed + i * n for i in range(count)]
    seeds = [int(s) for s in seed]
    if len(seeds) != count:
        raise ValueError(f"{len(seeds)} seeds for {count} prompts")
    return seeds


@runtime_checkable
class Engine(Protocol):
    capabilities: frozenset[str]  # names from `CAPABILITIES`: what it does beyond the three operations below

    def generate(self, prompts: list[str], n: int, sampling: Sampling, seed: Seeds) -> list[list[Completion]]:
        """n completions for each prompt, in prompt order."""
        ...

    def choice_probs(self, prompts: list[str], prefixes: list[str], choices: list[str]) -> list[list[float]]:
        """P(choice | prompt, assistant prefix) for each choice, normalised to sum to 1, per prompt."""
        ...

    def close(self) -> None:
        """Free the model (GPU memory) before the next stage."""
        ...


def run_together(engine, jobs: Sequence[Callable[[], R]]) -> Iterator[tuple[int, R]]:
    """Run ``jobs`` (each makes its own calls on ``engine``) and yield ``(job index, result)`` as each one ends.

    An engine that schedules many callers' requests at once (vLLM: all of a replica's shards in one scheduler)
    declares `RUNS_TOGETHER` and provides ``run_together`` itself; elsewhere the jobs run one after another, in
    order, each with the engine's own batching (the CPU engine), so their results do not depend on what else ran."""
    if can(engine, RUNS_TOGETHER):
        yield from engine.run_together(jobs)
        return
    for i, job in enumerate(jobs):
        yield i, job()
