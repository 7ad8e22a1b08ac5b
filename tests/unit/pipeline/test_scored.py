"""IFEval and LLMBar scored from answer rows (metareward/pipeline/scored.py), on answers written by hand."""

import json
from pathlib import Path

from metareward.evals import ifeval, llmbar
from metareward.pipeline import scored
from metareward.pipeline.contract import Output
from metareward.records import EvalAnswer

PROMPTS = [
    {"key": 1, "prompt": "Write without commas.", "instruction_id_list": ["punctuation:no_comma"], "kwargs": [{}]},
    {"key": 2, "prompt": "Shout it.", "instruction_id_list": ["change_case:english_capital", "punctuation:no_comma"],
     "kwargs": [{}, {}]},
]


def test_ifeval_from_answers(tmp_path):
    """Prompt 1 followed (no comma); prompt 2: capitals followed, a comma left in. Prompt level 1/2, instruction
    level 2/3. The files are the official evaluator's, and the intervals' values equal the figures."""
    got = {"ifeval/1": EvalAnswer(id="ifeval/1", text="No commas here."),
           "ifeval/2": EvalAnswer(id="ifeval/2", text="THIS IS THE ANSWER, SHOUTED IN CAPITAL LETTERS FOR EVERYONE",
                                    finish_reason="length")}
    res = Output()
    scored.ifeval_results(PROMPTS, got, str(tmp_path), res, seed=0)
    s = res.stats["ifeval"]
    assert (s["prompt_level_strict_acc"], s["inst_level_strict_acc"]) == (0.5, 2 / 3)
    assert s["ci95"]["prompt_level_strict_acc"]["value"] == 0.5 and s["ci95"]["inst_level_strict_acc"]["n"] == 2
    assert s["ci95"]["inst_level_strict_acc"]["value"] == round(2 / 3, 4)
    assert res.counts == {"ifeval_prompts": 2, "ifeval_truncated": 1}
    strict = Path(res.files["ifeval_strict"])
    assert strict.name == "eval_results_strict.jsonl"
    rows = [json.loads(line) for line in strict.read_text().splitlines()]
    assert [r["follow_instruction_list"] for r in rows] == [[True], [True, False]]
    assert strict.read_bytes() == ifeval.official_bytes(rows)
    responses = [json.loads(line) for line in Path(res.files["ifeval_responses"]).read_text().splitlines()]
    assert responses[1] == {"prompt": "Shout it.", "response": got["ifeval/2"].text}


ITEMS = [{"input": "q1", "output_1": "good", "output_2": "bad", "label": 1},
         {"input": "q2", "output_1": "bad", "output_2": "good", "label": 2}]


def test_llmbar_from_choice_answers(tmp_path):
    """Pair 1: P(a) > P(b) unswapped (output_1 wins: right), swapped P(a) > P(b) again (output_2 wins: wrong).
    Pair 2: unswapped b (output_2: right), swapped a (output_2 shown first: right). Accuracy (2 + 1) / 2 / 2 = 0.75,
    agreement: pair 2 only = 0.5, correct in both orders: pair 2 = 0.5."""
    probs = {(0, False): [0.7, 0.3], (0, True): [0.6, 0.4], (1, False): [0.2, 0.8], (1, True): [0.9, 0.1]}
    got = {f"llmbar/N/{i}/{'swap' if s else 'noswap'}": EvalAnswer(id="x", text="Output (", probs=p)
           for (i, s), p in probs.items()}
    res = Output()
    scored.llmbar_results({"N": ITEMS}, got, str(tmp_path), res, "expected", "self (M_1)", seed=0)
    s = res.stats["llmbar"]
    assert (s["pooled"]["accuracy"], s["pooled"]["agreement"], s["pooled"]["correct_both"]) == (0.75, 0.5, 0.5)
    assert s["sets"]["N"]["accuracy_ci95"]["value"] == 0.75 and s["sets"]["N"]["n"] == 2
    assert s["judge"] == "self (M_1)" and s["verdicts"].startswith("P(a) vs P(b)")
    rows = llmbar.read_results(res.files["llmbar_N_results"])
    assert llmbar.score_results(rows)["accuracy"] == 0.75
    assert json.loads(Path(res.files["llmbar_N_statistics"]).read_text())["correct_both"] == "1 / 2 = 50.0%"


def test_llmbar_parse_scoring_counts_unparsed_as_wrong(tmp_path):
    """Pair 1 answered "Output (a)" both times: right unswapped, wrong swapped; pair 2 unparsed twice: wrong
    both times, yet "equal" (LLMBar counts two unparsed verdicts as agreeing). Accuracy 1 / 2 / 2 = 0.25."""
    texts = {(0, False): "Output (a)", (0, True): "Output (a)", (1, False): "no idea", (1, True): ""}
    got = {f"llmbar/N/{i}/{'swap' if s else 'noswap'}": EvalAnswer(id="x", text=t) for (i, s), t in texts.items()}
    res = Output()
    scored.llmbar_results({"N": ITEMS}, got, str(tmp_path), res, "parse", "self (M_0)", seed=0)
    p = res.stats["llmbar"]["pooled"]
    assert (p["accuracy"], p["agreement"], p["n_unparsed_noswap"]) == (0.25, 0.5, 1)
