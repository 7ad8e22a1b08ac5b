"""VLLMEngine against TransformersEngine on the embedded model. Runs only where vLLM and a CUDA GPU are present
(never in CPU CI); elsewhere every test here is skipped.

``METAREWARD_TEST_VLLM_CPU=1`` runs them on a CPU build of vLLM instead (``vllm-cpu``, in its own venv: see
/work/shared/platform-notes.md; engine start-up takes about two minutes there). The GPU-memory test still needs CUDA.
"""

from __future__ import annotations

import importlib.util
import os

import pytest

from metareward.engines.base import Sampling
from metareward.method.prompts import SCORE_PREFIX, VERDICT_PREFIX

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _cuda() -> bool:
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return torch.cuda.is_available()


def _gpu_with_vllm() -> bool:
    if importlib.util.find_spec("vllm") is None:
        return False
    return _cuda() or os.environ.get("METAREWARD_TEST_VLLM_CPU") == "1"


pytestmark = [
    pytest.mark.gpu,
    pytest.mark.slow,
    pytest.mark.skipif(not _gpu_with_vllm(), reason="needs vllm and a CUDA GPU"),
]

JUDGE = "Review the user's question and the response.\n<question>What is 2+2?</question>\n<response>4</response>"


@pytest.fixture(scope="module")
def engines():
    from metareward.engines.transformers_engine import TransformersEngine
    from metareward.engines.vllm_engine import VLLMEngine
    from metareward.engines.models import embedded_model_path

    path = embedded_model_path()
    ref = TransformersEngine(path, dtype="float32")
    eng = VLLMEngine(path, dtype="bfloat16", max_model_len=2048, gpu_memory_utilization=0.3)
    yield eng, ref
    eng.close()
    ref.close()


def test_generate(engines):
    eng, _ = engines
    prompts = ["What is the capital of France?", "Write a short poem about the sea."]
    s = Sampling(temperature=0.8, top_p=0.95, max_new_tokens=16)
    a = eng.generate(prompts, 2, s, seed=7)
    assert [len(row) for row in a] == [2, 2]
    for row in a:
        for c in row:
            assert c.text and 0 < c.n_tokens <= 16 and c.finish_reason in ("stop", "length")
            assert "<|im_end|>" not in c.text
    assert eng.generate(prompts, 2, s, seed=7) == a
    [[g1, g2]] = eng.generate(["Say hi."], 2, Sampling(temperature=0.0, max_new_tokens=48), seed=0)
    assert g1 == g2 and g1.finish_reason == "stop"


@pytest.mark.parametrize("prefix,choices", [
    ("The response is correct.\n" + SCORE_PREFIX, list("012345")),
    (VERDICT_PREFIX, ["A", "B"]),  # trailing space: the shared-prefix back-off path
    ("Answer:", [" yes, definitely", " no"]),  # multi-token: chained one-token requests
])
def test_choice_probs_agree_with_transformers(engines, prefix, choices):
    from vllm import SamplingParams

    from metareward.engines.vllm_engine import _supports_logprob_token_ids

    eng, ref = engines
    prompts = [JUDGE, "Is the sky blue?"]
    got = eng.choice_probs(prompts, [prefix] * 2, choices)
    want = ref.choice_probs(prompts, [prefix] * 2, choices)
    for g in got:
        assert abs(sum(g) - 1) < 1e-6
    if not _supports_logprob_token_ids(SamplingParams) and prefix == VERDICT_PREFIX:
        pytest.skip("this vLLM returns only the top-20 logprobs; ' A'/' B' can fall outside them (documented)")
    for g, w in zip(got, want):
        assert max(abs(x - y) for x, y in zip(g, w)) < 0.05  # bf16 vs fp32 (fp32 vs fp32 agreed to 1e-5 on CPU)


@pytest.mark.skipif(not _cuda(), reason="needs a CUDA GPU")
def test_close_frees_gpu_memory():
    import torch

    from metareward.engines.vllm_engine import VLLMEngine
    from metareward.engines.models import embedded_model_path

    eng = VLLMEngine(embedded_model_path(), dtype="bfloat16", max_model_len=1024, gpu_memory_utilization=0.3)
    free_open = torch.cuda.mem_get_info()[0]
    eng.close()
    assert torch.cuda.mem_get_info()[0] > free_open
