from metareward.records import Manifest
from metareward.reporting.summary import iteration_summary, to_markdown


def M(stage, counts=None, stats=None, files=None, duration=1.0):
    return Manifest(stage=stage, iteration=1, run="r", key="k", uri=f"/r/iter_1/{stage}", counts=counts or {},
                    stats=stats or {}, files=files or {}, duration_s=duration)


def test_summary_reads_the_manifests():
    s = iteration_summary(1, {
        "prompts": M("prompts", {"prompts": 16}),
        "generate": M("generate", {"responses": 64}, {"mean_chars": 400.5}),
        "judge": M("judge", {"judgments": 192}, {"parse_rate": 0.75, "mean_score": 3.1,
                                                 "score_histogram": {"3": 144}}),
        "meta_judge": M("meta_judge", {"calls": 96, "decided": 90}),
        "pairs": M("pairs", {"actor_pairs": 12, "judge_pairs": 5, "actor_tie": 4, "judge_all_equal": 2,
                             "judge_dropped_by_share_cap": 1}, {"meta_judge": {"w1": 0.25, "w2": 0.75}}),
        "train": M("train", {"steps": 4}, {"steps": 4, "train_loss": 0.69}, {"model": "/r/iter_1/train/model"}),
    })
    assert (s["prompts"], s["responses"], s["judgments"], s["judge_parse_rate"]) == (16, 64, 192, 0.75)
    assert (s["meta_judge_calls"], s["meta_judge_decided"], s["actor_pairs"], s["judge_pairs"]) == (96, 90, 12, 5)
    assert s["pair_skips"] == {"actor_tie": 4, "judge_all_equal": 2, "judge_dropped_by_share_cap": 1}
    assert s["position_weights"] == {"w1": 0.25, "w2": 0.75}
    assert s["model"] == "/r/iter_1/train/model" and s["train"]["steps"] == 4
    md = to_markdown(s)
    assert "| actor_pairs | 12 |" in md and "actor_tie: 4" in md


def test_summary_reports_the_iteration_0_stages():
    """Iteration 1 carries the prompt pool's and EFT's headline numbers; agreement is read from the EFT stats."""
    base = {"prompts": M("prompts", {"prompts": 8, "contaminated": 3}), "generate": M("generate"),
            "judge": M("judge"), "pairs": M("pairs")}
    s = iteration_summary(1, {**base, "prompt_pool": M("prompt_pool", {"requests": 8, "parsed": 20,
                                                                       "generated_kept": 11, "pool": 19}),
                              "eft": M("eft", {"examples": 12, "steps": 3},
                                       {"agreement_before": {"agreement": 0.5}, "agreement_after": {"agreement": 0.75}})})
    assert s["prompts_contaminated"] == 3
    assert s["prompt_pool"] == {"requests": 8, "parsed": 20, "generated_kept": 11, "generated_contaminated": None,
                                "pool": 19}
    assert s["eft"] == {"examples": 12, "steps": 3, "agreement_before": 0.5, "agreement_after": 0.75}
    assert "eft: examples 12, steps 3, agreement_before 0.5, agreement_after 0.75" in to_markdown(s)
    assert "eft" not in iteration_summary(1, base)


def test_the_benchmark_is_the_reports_table_of_m0_beside_mt_with_its_judges():
    base = {"prompts": M("prompts"), "generate": M("generate"), "judge": M("judge"), "pairs": M("pairs"),
            "train": M("train", stats={"steps": 4, "train_loss": 0.689121812582016, "sec_per_step": 56.776575})}
    judge = "local:transformers:M_0#33f8"

    def bench(t, score, win):
        return M("benchmark", stats={"model_iteration": t, "mean_score": score, "parse_rate": 1.0,
                                     "mean_chars": 300.0 + t / 3, "judge": f"self (M_{t})",
                                     "mt_bench": {"score": win / 10, "n": 6, "judge": judge, "label": "not comparable"},
                                     "alpaca_eval": {"win_rate": win, "n_total": 4, "judge": judge,
                                                     "label": "not comparable"}})

    md = to_markdown(iteration_summary(1, {**base, "benchmark": bench(1, 2.0227, 51.25)},
                                       baseline=bench(0, 2.26, 44.9728)))
    assert "Training: steps 4, train_loss 0.6891, final_rewards_accuracies -, final_rewards_margins -, " \
           "sec_per_step 56.78" in md
    assert "### Iteration 1: benchmark\n\n| model | metric | value | judge | label |\n" in md
    assert "| M_0 | self-judged score | 2.26 | self (M_0) |  |" in md
    assert "| M_1 | self-judged score | 2.0227 | self (M_1) |  |" in md
    assert f"| M_0 | MT-Bench | 4.4973 | {judge} | not comparable |" in md
    assert f"| M_1 | MT-Bench | 5.125 | {judge} | not comparable |" in md
    assert f"| M_1 | AlpacaEval win rate | 51.25 | {judge} | not comparable |" in md
    assert "Arena-Hard" not in md  # metrics no model has are left out
    assert "Benchmark answers, mean chars: M_0 300, M_1 300.3\n" in md
    # without a baseline: M_1 alone
    alone = to_markdown(iteration_summary(1, {**base, "benchmark": bench(1, 2.0, 50.0)}))
    assert "| M_1 | MT-Bench |" in alone and "| M_0 |" not in alone
