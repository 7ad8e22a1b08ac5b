"""metareward.pipeline.contract's stage keys digest the engine backend a stage runs, not every backend: a change to
the CPU engine's code re-keys a transformers run's engine stages and leaves a vLLM run's keys alone."""

from __future__ import annotations

import hashlib

import pytest

from metareward.config import load_config
from metareward.pipeline import contract
from metareward.registry import ENGINE_CODE, STAGES, code_of
from metareward.runstore.code import module_file

ENGINE_STAGES = {name for name, s in STAGES.items() if s.engine}


def _keys(backend: str) -> dict[str, str]:
    cfg = load_config("smoke", [f"engine.backend={backend}"])
    return {s: contract.stage_key(s, cfg, 1, {"prompts": "d1"}) for s in STAGES}


@pytest.fixture
def decode_loop_edited(monkeypatch):
    """Makes the code digest see engines.decoding (the CPU engine's decode loop) as changed."""
    real = contract._digest_of

    def digest(modules):
        modules = list(modules)
        out = real(modules)
        return hashlib.sha256(f"{out} edited".encode()).hexdigest() if "metareward.engines.decoding" in modules else out

    return lambda: monkeypatch.setattr(contract, "_digest_of", digest)


def test_a_cpu_engine_change_rekeys_transformers_stages_only(decode_loop_edited):
    before = {b: _keys(b) for b in ENGINE_CODE}
    decode_loop_edited()
    after = {b: _keys(b) for b in ENGINE_CODE}
    assert after["vllm"] == before["vllm"] and after["fake"] == before["fake"]
    changed = {s for s in STAGES if after["transformers"][s] != before["transformers"][s]}
    assert changed == ENGINE_STAGES == {"prompt_pool", "eft", "generate", "judge", "meta_judge", "benchmark"}


def test_the_backend_enters_only_the_keys_of_stages_that_run_an_engine():
    vllm, transformers = _keys("vllm"), _keys("transformers")
    for s in STAGES:
        # the engine section is in the engine stages' config digest too; the stages without one keep their key
        assert (vllm[s] == transformers[s]) is (s not in ENGINE_STAGES), s
    assert contract.code_digest("train", "vllm") == contract.code_digest("train", "transformers")
    assert contract.code_digest("generate", "vllm") != contract.code_digest("generate", "transformers")


def test_each_backends_modules_exist_and_an_unknown_backend_is_an_error():
    for backend, modules in ENGINE_CODE.items():
        for mod in modules:
            assert module_file(f"metareward.{mod}").is_file(), (backend, mod)
    assert "engines.vllm_engine" not in code_of("judge", "transformers")
    assert "engines.decoding" not in code_of("judge", "vllm")
    with pytest.raises(KeyError, match="unknown engine backend 'tpu'"):
        code_of("generate", "tpu")


def test_an_iterations_key_sees_only_its_own_schedule_values():
    """pairs.rho is a schedule: iteration 1's pairs stage keeps its key when a later entry changes, iteration 2's
    re-keys; the stages that do not read ``pairs`` keep theirs everywhere."""
    before = load_config("smoke", ["pairs.rho=[0.0, 0.3]", "run.iterations=2"])
    after = load_config("smoke", ["pairs.rho=[0.0, 0.5]", "run.iterations=2"])

    def key(cfg, stage, t):
        return contract.stage_key(stage, cfg, t, {"responses": "d1"})

    assert key(before, "pairs", 1) == key(after, "pairs", 1)
    assert key(before, "pairs", 2) != key(after, "pairs", 2)
    assert all(key(before, s, t) == key(after, s, t) for s in ("generate", "judge", "meta_judge", "train")
               for t in (1, 2))
