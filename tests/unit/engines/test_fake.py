"""open_engine and the fake backend: fast, no model."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from metareward.config import EngineSection, ModelSection
from metareward.engines import Completion, Engine, Sampling, open_engine
from metareward.engines.fake import FakeEngine


def test_open_engine_fake_satisfies_protocol():
    eng = open_engine("fake", "fake", engine_cfg=EngineSection(backend="fake"), model_cfg=ModelSection())
    assert isinstance(eng, FakeEngine)
    assert isinstance(eng, Engine)
    out = eng.generate(["a", "b", "c"], 2, Sampling(max_new_tokens=8), seed=3)
    assert [len(row) for row in out] == [2, 2, 2]
    assert all(isinstance(c, Completion) and c.text for row in out for c in row)
    assert out == eng.generate(["a", "b", "c"], 2, Sampling(max_new_tokens=8), seed=3)
    probs = eng.choice_probs(["a", "b"], ["Score: ", "Score: "], list("012345"))
    assert [len(p) for p in probs] == [6, 6]
    assert all(abs(sum(p) - 1) < 1e-12 for p in probs)
    eng.close()


def test_fake_sample_j_of_prompt_i_is_its_prompt_and_stream_seed_i_plus_j():
    eng, s = FakeEngine(), Sampling(max_new_tokens=8)
    prompts = ["a", "b"] + [f"prompt {k}" for k in range(4)]
    out = eng.generate(prompts, 2, s, seed=10)  # an int seed: prompt i's streams 10 + 2i, 11 + 2i
    assert out[0][1] == eng.generate(["a"], 1, s, seed=[11])[0][0]  # sample 1 of prompt 0: stream 11
    assert out[1] == eng.generate(["b"], 2, s, seed=[12])[0]  # prompt 1 alone, on its own seed 12
    assert eng.generate(["b", "a"], 2, s, seed=[12, 10]) == [out[1], out[0]]  # order and neighbours do not matter
    assert len({c.text for row in out for c in row}) > 1  # (the streams differ somewhere)
    with pytest.raises(ValueError, match="2 seeds for 3 prompts"):
        eng.generate(["a", "b", "c"], 1, s, seed=[1, 2])


def test_open_engine_unknown_backend():
    with pytest.raises(ValueError, match="unknown engine backend"):
        open_engine("llamacpp", "x", engine_cfg=EngineSection(), model_cfg=ModelSection())


def test_engine_modules_import_without_torch():
    code = (
        "import sys\n"
        "import metareward.engines, metareward.engines.transformers_engine, metareward.engines.vllm_engine\n"
        "bad = [m for m in ('torch', 'transformers', 'vllm') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    root = Path(__file__).resolve().parents[3]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))}
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root, env=env)


def test_vllm_engine_without_vllm_says_how_to_install():
    pytest.importorskip("torch")  # the message matters only where people would try it
    import importlib.util

    if importlib.util.find_spec("vllm") is not None:
        pytest.skip("vllm is installed here")
    from metareward.engines.vllm_engine import VLLMEngine

    with pytest.raises(ImportError, match="metareward\\[gpu\\]"):
        VLLMEngine("some/model")
