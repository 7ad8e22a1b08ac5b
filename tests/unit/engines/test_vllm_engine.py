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
    # fp32: greedy texts must not depend on which requests shared a batch (bf16 ones can flip on CPU)
    eng = VLLMEngine(path, dtype="float32", max_model_len=2048, gpu_memory_utilization=0.3)
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


def test_samples_of_one_call_draw_distinct_streams(engines, monkeypatch):
    """The old bug: request i seeded seed + i, so with n=2 sample 1 of prompt i was sample 0 of prompt i + 1 (the
    same text for the same prompt). Now prompt i is seeded seed + i * n: the streams are s, s+1, s+2, s+3."""
    eng, _ = engines
    sent = []
    run = eng._run
    monkeypatch.setattr(eng, "_run", lambda prompts, params: sent.extend(params) or run(prompts, params))
    prompt = "Write a short poem about the sea."
    outs = eng.generate([prompt, prompt], 2, Sampling(temperature=0.8, top_p=0.95, max_new_tokens=24), seed=0)
    assert outs[0][1] != outs[1][0]
    streams = [p.seed + j for p in sent for j in range(p.n)]
    assert sorted(streams) == [0, 1, 2, 3]


def test_chat_prompts_are_the_ids_llm_chat_sends(engines):
    from vllm import SamplingParams

    eng, _ = engines
    convs = [
        [{"role": "user", "content": "What is the capital of France?"}],
        [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
         {"role": "user", "content": "Name a colour."}],
    ]
    greedy = SamplingParams(temperature=0.0, max_tokens=24, stop_token_ids=eng.stop_ids)
    want = eng.llm.chat(convs, greedy, use_tqdm=False)
    assert [eng._chat_ids(c) for c in convs] == [list(o.prompt_token_ids) for o in want]  # one BOS, no more
    got = eng.generate_chat(convs, 1, Sampling(temperature=0.0, max_new_tokens=24), seed=0)
    assert [row[0].text for row in got] == [o.outputs[0].text.strip() for o in want]


def _shard(eng, i, sampling):
    """One shard's engine calls, as a stage makes them: responses, then the judge's expected score of each."""
    prompts = [f"Name {i + 2} animals.", f"What is {i} plus {i}?"]
    rows = eng.generate(prompts, 2, sampling, seed=1000 * i)
    probs = eng.choice_probs([JUDGE] * 2, ["The response is correct.\n" + SCORE_PREFIX] * 2, list("012345"))
    return rows, probs


def _together(eng, sampling, in_flight):
    from metareward.engines.base import run_together

    eng.max_inflight_jobs = in_flight
    try:
        return dict(run_together(eng, [lambda i=i: _shard(eng, i, sampling) for i in range(3)]))
    finally:
        eng.max_inflight_jobs = 64


def _assert_same_shards(got, want, tol):
    """Every job's rows, the same greedy texts; probabilities within ``tol`` (prefix-cache hits change the last
    bits of a prefill)."""
    assert sorted(got) == list(range(len(want)))
    for i, (rows, probs) in enumerate(want):
        assert [len(r) for r in got[i][0]] == [len(r) for r in rows] and len(got[i][1]) == len(probs)
        assert got[i][0] == rows
        for g, w in zip(got[i][1], probs):
            assert max(abs(x - y) for x, y in zip(g, w)) < tol


def test_run_together_gives_each_job_its_rows(engines):
    eng, _ = engines
    greedy = Sampling(temperature=0.0, max_new_tokens=16)
    alone = [_shard(eng, i, greedy) for i in range(3)]
    # One job at a time: the batches of the direct calls, so the driver's requests must give the same texts.
    _assert_same_shards(_together(eng, greedy, 1), alone, 1e-4)
    # All three in one scheduler: in fp32 still the sequential texts (bf16 ones can flip with the batch's
    # composition, whichever path built the batch).
    _assert_same_shards(_together(eng, greedy, 64), alone, 1e-3)
    sampled = _together(eng, Sampling(max_new_tokens=8), 64)
    assert all([len(r) for r in sampled[i][0]] == [2, 2] and len(sampled[i][1]) == 2 for i in range(3))
    assert eng.generate(["Say hi."], 1, greedy, seed=0)  # direct calls work again afterwards


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
        assert max(abs(x - y) for x, y in zip(g, w)) < 0.05  # loose enough for bf16 or TF32 on a GPU


@pytest.mark.skipif(not _cuda(), reason="needs a CUDA GPU")
def test_close_frees_gpu_memory():
    import torch

    from metareward.engines.vllm_engine import VLLMEngine
    from metareward.engines.models import embedded_model_path

    eng = VLLMEngine(embedded_model_path(), dtype="bfloat16", max_model_len=1024, gpu_memory_utilization=0.3)
    free_open = torch.cuda.mem_get_info()[0]
    eng.close()
    assert torch.cuda.mem_get_info()[0] > free_open
