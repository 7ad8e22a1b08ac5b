"""The smoke recipe's benchmark stage on the real embedded SmolLM2-135M (transformers engine, CPU): tiny
MT-Bench- and AlpacaEval-style evaluations with M_0 as the local judge. Plumbing, not the model's quality."""

import time

import pytest

from metareward import stages, store
from metareward.config import load_config


@pytest.mark.slow
def test_smoke_benchmark_stage_on_the_real_model(tmp_path):
    cfg = load_config("smoke", [f"storage.root={tmp_path}", "run.name=bench"])
    m0 = stages.base_model(cfg)
    prompts_m = stages.prompts(cfg, 1)
    start = time.perf_counter()
    m = stages.benchmark(cfg, 0, m0, prompts_m)
    first = time.perf_counter() - start

    mt, al = m.stats["mt_bench"], m.stats["alpaca_eval"]
    judge = f"local:transformers:M_0#{m0.digest[:12]}"
    assert mt["judge"] == judge == al["judge"] and mt["label"] == "not comparable to published"
    assert mt["n"] == 6 and mt["n_failed"] == 0 and 1.0 <= mt["score"] <= 10.0   # expected ratings in [1, 10]
    assert al["n_total"] == 4 and 0.0 <= al["win_rate"] <= 100.0
    assert mt["judge_scoring"] == "expected" and mt["multi_turn"] == "messages"  # generate_chat: real turns

    # without the public benchmarks, for the cost they add (printed with -s)
    bare = load_config("smoke", [f"storage.root={tmp_path}", "run.name=bare", "eval.mt_bench.enabled=false",
                                 "eval.alpaca_eval.enabled=false"])
    start = time.perf_counter()
    stages.benchmark(bare, 0, m0, stages.prompts(bare, 1))
    base = time.perf_counter() - start
    # a recomputation takes every judgment from the cache
    store.invalidate(m.uri)
    again = stages.benchmark(cfg, 0, m0, prompts_m)
    assert again.stats["judge_cache"]["misses"] == 0 and again.stats["mt_bench"]["score"] == mt["score"]
    print(f"\nbenchmark stage: {first:.1f} s with MT-Bench + AlpacaEval, {base:.1f} s without")
