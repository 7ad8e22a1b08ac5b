"""metareward.pipeline.roles: the context check and the multi-turn path ask an engine's declared capabilities
(`metareward.engines.base.can`), not which methods it happens to have; the judge's expected scores come out as
the method's rule (`metareward.method.scoring`) gives them, with or without the KV-cache shortcut."""

from __future__ import annotations

import pytest

from metareward.config import load_config
from metareward.engines.base import SCORES_WHILE_GENERATING
from metareward.engines.fake import FakeEngine
from metareward.evals.harness import chat_generate
from metareward.method.prompts import SCORE_CHOICES, SCORE_PREFIX
from metareward.pipeline.roles import fits_context, judge_responses
from metareward.records import Response


def test_the_context_check_asks_the_declaration():
    texts = ["one two three", "one two three four five six"]
    assert fits_context(FakeEngine(context_length=5), ["a", "b"], texts, 2) == ["a"]  # 3 + 2 fits, 6 + 2 not

    class Silent(FakeEngine):  # counts tokens, but does not say so: nothing is skipped
        capabilities = frozenset()

    assert fits_context(Silent(context_length=5), ["a", "b"], texts, 2) == ["a", "b"]
    assert fits_context(FakeEngine(context_length=None), ["a", "b"], texts, 2) == ["a", "b"]  # no limit stated


def test_chat_generate_passes_messages_only_to_an_engine_that_declares_chats():
    class Chatty(FakeEngine):
        def generate_chat(self, conversations, n, sampling, seed):
            raise AssertionError("not declared: never called")

    turns = [[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
              {"role": "user", "content": "How are you?"}]]
    texts, how = chat_generate(Chatty(), turns, 8, 0)
    assert how == "transcript" and len(texts) == 1


class Scoring(FakeEngine):
    """The fake engine with the KV-cache shortcut: P = [0.1, 0, 0, 0, 0.4, 0.5] read after each sample."""

    capabilities = FakeEngine.capabilities | {SCORES_WHILE_GENERATING}
    PROBS = [0.1, 0.0, 0.0, 0.0, 0.4, 0.5]

    def generate_scored(self, prompts, n, sampling, seed, suffix, choices):
        assert suffix == "\n" + SCORE_PREFIX and choices == SCORE_CHOICES
        return [[(c, list(self.PROBS)) for c in row] for row in self.generate(prompts, n, sampling, seed)]

    def generate(self, prompts, n, sampling, seed):
        rows = super().generate(prompts, n, sampling, seed)
        return [[type(c)(text=c.text.split("\n")[0] if j == 0 else c.text, n_tokens=c.n_tokens,
                          finish_reason=c.finish_reason) for j, c in enumerate(row)] for row in rows]


def test_expected_judging_uses_cache_scores_only_where_they_stand():
    """Sample 0 of each response ends before any score statement: its cache probabilities stand, and its score is
    0 * 0.1 + 4 * 0.4 + 5 * 0.5 = 4.1 with "5" (the likeliest) written. Sample 1 wrote "Score: k" itself, so the
    cache read it after "...Score: k\\nScore: ": re-scored with choice_probs after its justification."""
    cfg = load_config("smoke", ["engine.backend=fake", "judge.scoring=expected", "judge.sampling.max_new_tokens=8"])
    responses = [Response(id="p-r0", prompt_id="p", prompt="Why?", text="Because.", n_tokens=1)]
    engine = Scoring()
    rows = judge_responses(engine, cfg, responses, 2, seed=0)
    assert [r.id for r in rows] == ["p-r0-j0", "p-r0-j1"]
    assert rows[0].score == pytest.approx(4.1) and rows[0].text.endswith("\nScore: 5")
    assert rows[0].score_probs == Scoring.PROBS
    assert ("choice_probs", 1) in engine.calls  # only sample 1 was scored again
    assert rows[1].score_probs != Scoring.PROBS and rows[1].text.count("Score: ") == 1
