"""A deterministic fake engine that writes canned actor, judge and meta-judge text.

It lets the whole pipeline (stages, tasks, flows) run in a unit test in milliseconds. Sample ``j`` of prompt ``i``
is a pure function of (prompt, ``seed[i] + j``), the stream a real engine would draw it from
(`metareward.engines.base`), so reruns are reproducible and a sample does not depend on the other prompts. Scores grow with the response length
and verdicts favour the judgment whose score is closer to that, so pairs come out non-degenerate.
"""

from __future__ import annotations

import hashlib
import re

from metareward import progress
from metareward.engines.base import COUNTS_PROMPT_TOKENS, Completion, Sampling, Seeds, prompt_seeds
from metareward.method.prompts import JUDGE_HEAD, META_JUDGE_HEAD


def _h(*parts) -> int:
    return int(hashlib.sha256("\x1f".join(map(str, parts)).encode()).hexdigest()[:8], 16)


class FakeEngine:
    """Canned outputs; ``collapse=True`` makes the judge give 5 to everything (a judge-collapse drill)."""

    capabilities = frozenset({COUNTS_PROMPT_TOKENS})  # prompts measured in words

    def __init__(self, model_path: str = "fake", collapse: bool = False, context_length: int | None = None):
        self.model_path = model_path
        self.collapse = collapse
        self.context_length = context_length  # None: no limit; else prompts are measured in words (prompt_tokens)
        self.calls: list[tuple[str, int]] = []

    def generate(self, prompts: list[str], n: int, sampling: Sampling, seed: Seeds) -> list[list[Completion]]:
        self.calls.append(("generate", len(prompts) * n))
        bar = progress.tracker(len(prompts) * n, "generate")
        out = []
        for p, s in zip(prompts, prompt_seeds(seed, len(prompts), n)):
            out.append([self._one(p, s + j) for j in range(n)])
            bar.advance(n)
        return out

    def _one(self, prompt: str, stream: int) -> Completion:
        """One sample, from the prompt and its stream's seed only."""
        h = _h(prompt, stream)
        if prompt.startswith(META_JUDGE_HEAD):
            text = f"Judgment {'AB'[h % 2]} applies the rubric more carefully.\nWinner: Judgment {'AB'[h % 2]}"
        elif prompt.startswith(JUDGE_HEAD):
            resp = re.search(r"<response>(.*)</response>", prompt, re.S)
            length = len(resp.group(1)) if resp else 0
            score = 5 if self.collapse else min(5, 1 + length // 40 + h % 2)
            text = "The response is relevant" + " and useful" * (h % 4) + f".\nScore: {score}"
        else:
            text = "Here is an answer" + " with more detail" * (h % 7) + "."
        return Completion(text=text, n_tokens=len(text.split()), finish_reason="stop")

    def choice_probs(self, prompts: list[str], prefixes: list[str], choices: list[str]) -> list[list[float]]:
        self.calls.append(("choice_probs", len(prompts)))
        bar = progress.tracker(len(prompts), "score")
        out = []
        for p, pre in zip(prompts, prefixes):
            bar.advance(1)
            w = [1.0 + _h(p, pre, c) % 7 for c in choices]
            if self.collapse and choices and choices[-1] == "5":
                w = [0.0] * (len(choices) - 1) + [1.0]
            total = sum(w)
            out.append([x / total for x in w])
        return out

    def prompt_tokens(self, prompts: list[str]) -> list[int]:
        return [len(p.split()) for p in prompts]

    def close(self) -> None:
        pass
