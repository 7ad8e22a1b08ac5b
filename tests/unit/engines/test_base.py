"""metareward.engines.base: what each engine declares it can do beyond the protocol's three operations, and that
the declaration and the methods agree (every declared capability's members exist, no undeclared one's do)."""

from __future__ import annotations

import doctest

import pytest

from metareward.engines import base
from metareward.engines.base import (CAPABILITIES, CHATS, COUNTS_PROMPT_TOKENS, RUNS_TOGETHER,
                                     SCORES_WHILE_GENERATING, Engine, can, run_together)
from metareward.engines.fake import FakeEngine
from metareward.engines.transformers_engine import TransformersEngine
from metareward.engines.vllm_engine import VLLMEngine

# What each engine implements: the table a reader checks against the engines' docstrings.
DECLARED = {
    FakeEngine: {COUNTS_PROMPT_TOKENS},
    TransformersEngine: {COUNTS_PROMPT_TOKENS, SCORES_WHILE_GENERATING, CHATS},
    VLLMEngine: {COUNTS_PROMPT_TOKENS, CHATS, RUNS_TOGETHER},
}


def test_doctests():
    result = doctest.testmod(base)
    assert result.attempted > 0 and result.failed == 0


def _members(cls) -> set[str]:
    """The names an engine of ``cls`` has without loading a model: the class's, plus the fake's own attributes
    (its ``context_length`` is set per instance)."""
    names = set(dir(cls))
    if cls is FakeEngine:
        names |= set(vars(FakeEngine()))
    return names


@pytest.mark.parametrize("cls", list(DECLARED), ids=lambda c: c.__name__)
def test_each_engine_declares_what_it_implements_and_nothing_else(cls):
    assert cls.capabilities == DECLARED[cls]
    assert cls.capabilities <= set(CAPABILITIES)
    have = _members(cls)
    for capability, members in CAPABILITIES.items():
        if capability in cls.capabilities:
            assert set(members) <= have, (cls.__name__, capability)
        else:
            assert not set(members) & have, (cls.__name__, capability)


@pytest.mark.parametrize("cls", list(DECLARED), ids=lambda c: c.__name__)
def test_every_engine_has_the_protocols_three_operations(cls):
    assert {"generate", "choice_probs", "close", "capabilities"} <= set(dir(cls))


def test_the_fake_engine_is_an_engine_and_asks_by_declaration():
    eng = FakeEngine(context_length=60)
    assert isinstance(eng, Engine)
    assert can(eng, COUNTS_PROMPT_TOKENS) and not can(eng, SCORES_WHILE_GENERATING)
    assert not can(eng, CHATS) and not can(eng, RUNS_TOGETHER)


def test_an_unknown_capability_is_an_error_and_an_undeclared_engine_can_nothing():
    with pytest.raises(KeyError, match="unknown engine capability 'fast'"):
        can(FakeEngine(), "fast")
    assert not any(can(object(), c) for c in CAPABILITIES)


def test_run_together_uses_the_engines_own_scheduler_only_where_declared():
    class Together(FakeEngine):
        capabilities = FakeEngine.capabilities | {RUNS_TOGETHER}

        def run_together(self, jobs):
            for i, job in reversed(list(enumerate(jobs))):
                yield i, job()

    class Undeclared(FakeEngine):  # has the method, does not declare it: the jobs run in order
        def run_together(self, jobs):
            raise AssertionError("not declared: never called")

    jobs = [lambda: "a", lambda: "b"]
    assert list(run_together(Together(), jobs)) == [(1, "b"), (0, "a")]
    assert list(run_together(Undeclared(), jobs)) == [(0, "a"), (1, "b")]
