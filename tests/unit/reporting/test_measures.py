"""The judge-free measures as the reports show them, on hand-written benchmark stats.

IFEval, 12 prompts with 18 instructions: 5 prompts follow all their instructions strictly (5 / 12 = 0.41667), 9
instructions are followed strictly (9 / 18 = 0.5); loose: 6 / 12 = 0.5 and 11 / 18 = 0.61111. The bootstrap
bounds are inputs here (`metareward.intervals` computes them); shown to 2 decimals: 0.2500 -> 0.25, 0.5833 -> 0.58.

LLMBar, both orders of each pair: Natural 8 pairs (6 correct without swap, 5 with, 6 agree, 4 correct in both):
accuracy (6 + 5) / 2 / 8 = 0.6875, agreement 6 / 8 = 0.75, correct_both 4 / 8 = 0.5.
"""

from __future__ import annotations

import doctest

from metareward.method import drift
from metareward.reporting import measures

CI = {"value": 0.4167, "lo": 0.25, "hi": 0.5833, "n": 12, "rounds": 1000}
IFEVAL = {"prompt_level_strict_acc": 5 / 12, "inst_level_strict_acc": 0.5, "prompt_level_loose_acc": 0.5,
          "inst_level_loose_acc": 11 / 18, "n_prompts": 12, "n_instructions": 18,
          "categories": {"keywords": {"strict": 0.5}}, "instructions": {"keywords:existence": {"strict": 0.5}},
          "ci95": {"prompt_level_strict_acc": CI,
                   "inst_level_strict_acc": {"value": 0.5, "lo": 0.3333, "hi": 0.6667, "n": 12, "rounds": 1000}},
          "judge": "none (checked by code)", "mean_chars": 120.5}
NATURAL = {"accuracy": 0.6875, "agreement": 0.75, "correct_both": 0.5, "n": 8, "kappa_average": 0.3,
           "accuracy_ci95": {"value": 0.6875, "lo": 0.4375, "hi": 0.875, "n": 8, "rounds": 1000}}
LLMBAR = {"sets": {"Natural": NATURAL}, "pooled": NATURAL, "judge": "self (M_1)", "verdicts": "parsed (LLMBar's rule)"}


def _drift() -> dict:
    """drift.py's worked example: own judge prev (3, 4), cur (5, 4); reference prev (3, 4), cur (2, 4) -> gap 1.5,
    self-preference 0.75, the reference's 0.25, excess 0.5; the own judge prefers p1's newer answer (8 chars), the
    reference p1's older one (3 chars); p2 is a tie for both."""
    own = {"prev": {"p1": 3, "p2": 4}, "cur": {"p1": 5, "p2": 4}}
    ref = {"prev": {"p1": 3, "p2": 4}, "cur": {"p1": 2, "p2": 4}}
    texts = {"prev": {"p1": "aaa", "p2": "bbbbb"}, "cur": {"p1": "cccccccc", "p2": "dd"}}
    return {**drift.metrics(own, ref, texts), "own_judge": "M_1", "answers": "M_0 vs M_1", "reference_judge": "M_0"}


def test_doctests():
    assert doctest.testmod(measures).failed == 0


def test_an_interval_is_the_figure_its_bounds_to_2_decimals_and_n():
    assert measures.interval(CI) == "0.4167 [0.25, 0.58] (n=12)"
    assert measures.interval(None, 0.5) == "0.5"  # no interval: the figure alone
    assert measures.interval({"value": None, "lo": None, "hi": None, "n": 0}) == "-"  # nothing to score
    assert measures.with_n(0.75, 8) == "0.75 (n=8)" and measures.with_n(None, 8) == "-"


def test_bench_rows_name_the_judge_and_show_the_intervals():
    rows = measures.bench_rows({"ifeval": IFEVAL, "llmbar": LLMBAR})
    assert rows[0] == ["IFEval prompt-level strict", "0.4167 [0.25, 0.58] (n=12)", "none (checked by code)", None]
    assert rows[1][1] == "0.5 [0.33, 0.67] (n=12)"
    assert rows[3][:2] == ["IFEval instruction-level loose", "0.6111"]  # no interval given for it
    assert rows[4:] == [["LLMBar accuracy, pooled", "0.6875 [0.44, 0.88] (n=8)", "self (M_1)", "parsed (LLMBar's rule)"],
                        ["LLMBar agreement, pooled", "0.75 (n=8)", "self (M_1)", "parsed (LLMBar's rule)"],
                        ["LLMBar correct_both, pooled", "0.5 (n=8)", "self (M_1)", "parsed (LLMBar's rule)"]]
    assert measures.bench_rows({"mt_bench": {"score": 5}}) == []


def test_compact_keeps_the_headline_figures_in_the_same_shape():
    c = measures.compact({"ifeval": IFEVAL, "llmbar": LLMBAR, "drift": _drift(), "mt_bench": {"score": 5}})
    assert set(c) == {"ifeval", "llmbar", "drift"}
    assert "categories" not in c["ifeval"] and c["ifeval"]["ci95"]["prompt_level_strict_acc"] == CI
    assert c["ifeval"]["n_prompts"] == 12 and c["ifeval"]["judge"] == "none (checked by code)"
    assert c["llmbar"]["pooled"] == {k: NATURAL[k] for k in measures.LLMBAR_KEPT}  # no kappas
    assert c["llmbar"]["sets"]["Natural"]["accuracy_ci95"]["lo"] == 0.4375
    # the copy formats as the stats do
    assert measures.bench_rows(c) == measures.bench_rows({"ifeval": IFEVAL, "llmbar": LLMBAR})
    assert measures.figures(c) == measures.figures({"ifeval": IFEVAL, "llmbar": LLMBAR, "drift": _drift()})


def test_drift_rows_put_both_judges_side_by_side():
    rows = measures.drift_rows(_drift(), {"passed": False, "failed": ["health.drift.max_self_preference_excess: x"]})
    assert rows[0] == ["mean score, M_0's answers", 3.5, 3.5, None]
    assert rows[1] == ["mean score, M_1's answers", 4.5, 3.0, 1.5]  # gap
    assert rows[2] == ["change (M_1's - M_0's)", 1.0, -0.5, None]
    assert rows[3] == ["prefers M_1's answer to M_0's (ties half)", 0.75, 0.25, 0.5]  # excess
    assert rows[4] == ["preferred answer, mean chars", 8.0, 3.0, None]
    assert rows[5] == ["answers' mean chars (M_0, M_1)", 4.0, 5.0, None]
    assert rows[6] == ["prompts", 2, None, None]
    assert rows[7] == ["drift gate", "FAILED: health.drift.max_self_preference_excess: x", None, None]
    assert measures.drift_columns(_drift()) == ["quantity", "own judge (M_1)", "reference judge (M_0)",
                                                "own - reference"]


def test_figures_are_flat_names_per_measure():
    f = measures.figures({"ifeval": IFEVAL, "llmbar": LLMBAR, "drift": _drift()})
    assert (f["ifeval/prompt_level_strict_acc"], f["ifeval/prompt_level_strict_acc_lo"],
            f["ifeval/prompt_level_strict_acc_hi"]) == (5 / 12, 0.25, 0.5833)
    assert "ifeval/inst_level_loose_acc_lo" not in f and f["ifeval/n_instructions"] == 18
    assert (f["llmbar/accuracy"], f["llmbar/accuracy_lo"], f["llmbar/agreement"], f["llmbar/n"]) == (0.6875, 0.4375,
                                                                                                  0.75, 8)
    assert f["llmbar/Natural/correct_both"] == 0.5
    assert (f["drift/gap"], f["drift/self_preference"], f["drift/ref_preference"],
            f["drift/self_preference_excess"]) == (1.5, 0.75, 0.25, 0.5)
    assert "drift/own_judge" not in f  # text is not a figure


def test_card_lines():
    lines = measures.card_lines({"ifeval": IFEVAL, "llmbar": LLMBAR, "drift": _drift()})
    assert lines[0].startswith("  - ifeval: prompt_level_strict_acc 0.4167 [0.25, 0.58] (n=12), ")
    assert lines[0].endswith("(judge none (checked by code))")
    assert lines[1] == ("  - llmbar: accuracy 0.6875 [0.44, 0.88] (n=8), agreement 0.75, correct_both 0.5 "
                        "(judge self (M_1))")
    assert lines[2] == ("  - drift: own judge 4.5 vs reference 3 on M_0 vs M_1 (gap 1.5), prefers the newer answer "
                        "0.75 vs 0.25 (excess 0.5); own judge M_1, reference M_0")
