"""The one interface every generation backend implements.

A request is a single user turn (plain text); the engine applies the model's chat template. Two operations
cover all three roles:

- ``generate(prompts, n, sampling, seed)``: n sampled completions per prompt (actor, judge, meta-judge);
- ``choice_probs(prompts, prefixes, choices)``: after the assistant has written ``prefix`` (e.g. a
  justification followed by ``"Score: "``), the probability of each choice string (``"0".."5"`` or
  ``"A"/"B"``), renormalised over the choices. This is the ``expected`` scoring mode.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable


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


@runtime_checkable
class Engine(Protocol):
    def generate(self, prompts: list[str], n: int, sampling: Sampling, seed: int) -> list[list[Completion]]:
        """n completions for each prompt, in prompt order."""
        ...

    def choice_probs(self, prompts: list[str], prefixes: list[str], choices: list[str]) -> list[list[float]]:
        """P(choice | prompt, assistant prefix) for each choice, normalised to sum to 1, per prompt."""
        ...

    def close(self) -> None:
        """Free the model (GPU memory) before the next stage."""
        ...
