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


def test_the_judge_free_measures_of_m0_and_mt_with_intervals_and_the_drift(tmp_path):
    """M_0 and M_1 with IFEval, LLMBar and (M_1 only) drift stats; figures from tests/unit/reporting/test_measures.py
    (IFEval 5 / 12 = 0.4167 with bounds 0.2500, 0.5833 -> "0.4167 [0.25, 0.58] (n=12)"; LLMBar Natural 0.6875;
    drift.py's example: gap 1.5, self-preference 0.75 against the reference's 0.25). M_0's IFEval is 3 / 12 = 0.25."""
    import json

    from metareward.runstore import store
    from metareward.runstore.layout import RunLayout
    from metareward.reporting.summary import write_summary
    from test_measures import CI, IFEVAL, LLMBAR, _drift

    base = {"prompts": M("prompts"), "generate": M("generate"), "judge": M("judge"), "pairs": M("pairs")}
    m0_ifeval = {**IFEVAL, "prompt_level_strict_acc": 0.25,
                 "ci95": {"prompt_level_strict_acc": {"value": 0.25, "lo": 0.0833, "hi": 0.5, "n": 12}}}
    m0 = M("benchmark", stats={"model_iteration": 0, "ifeval": m0_ifeval, "llmbar": {**LLMBAR, "judge": "self (M_0)"}})
    m1 = M("benchmark", stats={"model_iteration": 1, "ifeval": IFEVAL, "llmbar": LLMBAR, "drift": _drift()})
    s = iteration_summary(1, {**base, "benchmark": m1}, baseline=m0)

    # summary.json: the same shape as the stats, the headline figures only
    assert set(s["benchmark"]) >= {"ifeval", "llmbar", "drift"} and "drift" not in s["benchmark_baseline"]
    assert s["benchmark"]["ifeval"]["ci95"]["prompt_level_strict_acc"] == CI
    assert s["benchmark"]["ifeval"]["n_prompts"] == 12 and "categories" not in s["benchmark"]["ifeval"]
    assert s["benchmark_baseline"]["ifeval"]["prompt_level_strict_acc"] == 0.25
    assert s["benchmark"]["llmbar"]["pooled"]["accuracy_ci95"]["hi"] == 0.875
    assert s["benchmark"]["llmbar"]["sets"]["Natural"]["correct_both"] == 0.5
    assert (s["benchmark"]["drift"]["gap"], s["benchmark"]["drift"]["self_preference_excess"]) == (1.5, 0.5)

    md = to_markdown(s)
    assert "| M_0 | IFEval prompt-level strict | 0.25 [0.08, 0.50] (n=12) | none (checked by code) |  |" in md
    assert "| M_1 | IFEval prompt-level strict | 0.4167 [0.25, 0.58] (n=12) | none (checked by code) |  |" in md
    assert "| M_1 | IFEval instruction-level loose | 0.6111 | none (checked by code) |  |" in md
    assert ("| M_0 | LLMBar accuracy, pooled | 0.6875 [0.44, 0.88] (n=8) | self (M_0) | parsed (LLMBar's rule) |"
            in md)
    assert "| M_1 | LLMBar agreement, pooled | 0.75 (n=8) | self (M_1) | parsed (LLMBar's rule) |" in md
    assert "### Iteration 1: LLMBar per set" in md
    assert "| M_1 | Natural | 0.6875 [0.44, 0.88] (n=8) | 0.75 | 0.5 | 8 | self (M_1) |" in md
    assert ("### Iteration 1: drift (M_0 vs M_1)\n\n| quantity | own judge (M_1) | reference judge (M_0) | "
            "own - reference |") in md
    assert "| mean score, M_1's answers | 4.5 | 3.0 | 1.5 |" in md
    assert "| prefers M_1's answer to M_0's (ties half) | 0.75 | 0.25 | 0.5 |" in md
    assert "| preferred answer, mean chars | 8.0 | 3.0 |  |" in md
    assert "drift gate" not in md  # the gate has not run yet

    # written after the gate ran: its result from health.json, in the JSON and the table
    run = RunLayout(str(tmp_path), "r")
    store.write_json(run.health(1), {"drift": {"passed": False, "failed": ["health.drift.k: 1 >= 1"], "metrics": {}}})
    write_summary(run, s)
    assert json.loads(store.read_text(run.summary(1, "json")))["drift_gate"] == {
        "passed": False, "failed": ["health.drift.k: 1 >= 1"]}
    assert "| drift gate | FAILED: health.drift.k: 1 >= 1 |  |  |" in store.read_text(run.summary(1, "md"))
