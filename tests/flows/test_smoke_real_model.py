"""The real pipeline on the embedded SmolLM2-135M: transformers engine, expected scoring, TRL DPO.

It checks the plumbing end to end on a real model (sizes cut down to fit CI), never the 135M model's judgment
quality, which is near chance.
"""

import json
from pathlib import Path

import pytest

from metareward.runstore import store
from metareward.config import load_config
from metareward.records import Judgment, MetaVerdict, PreferencePair
from metareward.runstore.layout import RunLayout


@pytest.mark.slow
def test_smoke_recipe_on_the_real_model(tmp_path, prefect_harness):
    from flows.run import run_pipeline

    cfg = load_config("smoke", [
        f"storage.root={tmp_path}", "run.name=real", "prompts.per_iteration=4", "prompts.eval_count=2",
        "actor.k=3", "judge.n=3", "actor.sampling.max_new_tokens=24", "judge.sampling.max_new_tokens=12",
        "meta_judge.sampling.max_new_tokens=8", "eval.max_new_tokens=16", "eval.mt_bench.max_new_tokens=8",
        "eval.alpaca_eval.max_new_tokens=8", "eval.alpaca_eval.judge.max_tokens=8", "eval.ifeval.limit=4",
        "eval.ifeval.max_new_tokens=16", "eval.llmbar.limit=3", "dpo.max_steps=1",
        "dpo.global_batch_size=2", "dpo.max_length=512",
    ])
    [summary] = run_pipeline(cfg)
    run = Path(RunLayout(str(tmp_path), "real").run)

    judgments = store.read_jsonl(str(run / "iter_1/judge/judgments.jsonl"), Judgment)
    assert len(judgments) == 4 * 3 * 3
    # expected mode: every judgment has a score in [0, 5] from a distribution over the six digits
    assert all(j.score is not None and 0 <= j.score <= 5 and abs(sum(j.score_probs) - 1) < 1e-4 for j in judgments)
    assert all(j.text.rstrip()[-1] in "012345" and "Score: " in j.text for j in judgments)
    verdicts = store.read_jsonl(str(run / "iter_1/meta_judge/verdicts.jsonl"), MetaVerdict)
    assert verdicts and all(0 <= v.p_a <= 1 for v in verdicts)
    pairs = store.read_jsonl(str(run / "iter_1/pairs/pairs.jsonl"), PreferencePair)
    assert len(pairs) == summary["actor_pairs"] + summary["judge_pairs"] > 0

    model_dir = run / "iter_1/train/model"
    assert (model_dir / "model.safetensors").is_file() and (model_dir / "config.json").is_file()
    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(model_dir).num_parameters() > 100_000_000
    assert summary["benchmark"]["model_iteration"] == 1 and summary["benchmark_baseline"]["model_iteration"] == 0

    # the judge-free measures for M_0 and M_1: IFEval checked by code, LLMBar judged by the model itself, each with
    # its interval; the drift guard compared M_1's judge with M_0's on both models' answers, and did not trip
    for label in ("benchmark_baseline", "benchmark"):
        ifeval, llmbar = summary[label]["ifeval"], summary[label]["llmbar"]
        assert ifeval["n_prompts"] == 4 and 0 <= ifeval["prompt_level_strict_acc"] <= ifeval["prompt_level_loose_acc"]
        lo, hi = ifeval["ci95"]["inst_level_loose_acc"]["lo"], ifeval["ci95"]["inst_level_loose_acc"]["hi"]
        assert lo <= ifeval["inst_level_loose_acc"] <= hi
        assert llmbar["pooled"]["n"] == 3 and 0 <= llmbar["pooled"]["accuracy"] <= 1
    drift = summary["benchmark"]["drift"]
    assert drift["prompts"] == 2 and drift["own_judge"] == "M_1" and drift["reference_judge"].startswith("local:M_0#")
    health = json.loads((run / "iter_1/health.json").read_text())
    assert health["drift"]["passed"] is True and summary["drift_gate"]["passed"] is True
    md = (run / "iter_1/summary.md").read_text()
    assert "IFEval prompt-level strict" in md and "LLMBar accuracy" in md
    assert "IFEval prompt-level strict" in (run / "report" / "report.md").read_text()
