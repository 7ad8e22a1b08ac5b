"""The smoke recipe's benchmark stage on the real embedded SmolLM2-135M (transformers engine, CPU): tiny
MT-Bench- and AlpacaEval-style evaluations with M_0 as the local judge. Plumbing, not the model's quality."""

import time

import pytest

from metareward.pipeline import stages
from metareward.runstore import store
from metareward.config import load_config


SHORT = ["eval.max_new_tokens=16", "eval.mt_bench.max_new_tokens=12", "eval.alpaca_eval.max_new_tokens=12",
         "eval.alpaca_eval.judge.max_tokens=12"]


@pytest.mark.slow
def test_smoke_benchmark_stage_on_the_real_model(tmp_path):
    # the smoke recipe's benchmarks with shorter answers (the plumbing is the same at any length)
    cfg = load_config("smoke", [f"storage.root={tmp_path}", "run.name=bench", *SHORT])
    m0 = stages.base_model(cfg)
    prompts_m = stages.prompts(cfg, 1)
    start = time.perf_counter()
    m = stages.benchmark(cfg, 0, m0, prompts_m, stages.answers(cfg, 0, m0, prompts_m))
    first = time.perf_counter() - start

    mt, al = m.stats["mt_bench"], m.stats["alpaca_eval"]
    judge = f"local:transformers:M_0#{m0.digest[:12]}"
    assert mt["judge"] == judge == al["judge"] and mt["label"] == "not comparable to published"
    assert mt["n"] == 6 and mt["n_failed"] == 0 and 1.0 <= mt["score"] <= 10.0   # expected ratings in [1, 10]
    assert al["n_total"] == 4 and 0.0 <= al["win_rate"] <= 100.0
    assert mt["judge_scoring"] == "expected" and mt["multi_turn"] == "messages"  # generate_chat: real turns

    # a recomputation takes every judgment from the cache
    store.invalidate(m.uri)
    start = time.perf_counter()
    again = stages.benchmark(cfg, 0, m0, prompts_m, stages.answers(cfg, 0, m0, prompts_m))
    assert again.stats["judge_cache"]["misses"] == 0 and again.stats["mt_bench"]["score"] == mt["score"]
    print(f"\nbenchmark stage: {first:.1f} s, {time.perf_counter() - start:.1f} s with the judge cache")
