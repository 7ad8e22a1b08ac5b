"""The smoke-eft recipe on the embedded SmolLM2-135M: prompt generation from 8 seed prompts, EFT on the tiny
hand-written ranked set (TRL SFTTrainer) -> M_0, then iteration 1 from M_0. Sizes cut down to fit a 2-core CPU
in a few minutes; it checks the plumbing, never the 135M model's judgment quality."""

from pathlib import Path

import pytest

from metareward.runstore import store
from metareward.config import load_config
from metareward.records import Prompt
from metareward.runstore.layout import RunLayout


@pytest.mark.slow
def test_smoke_eft_recipe_on_the_real_model(tmp_path, prefect_harness):
    from flows.run import run_pipeline

    cfg = load_config("smoke-eft", [
        f"storage.root={tmp_path}", "run.name=real-eft",
        "prompt_pool.requests=2", "prompt_pool.sampling.max_new_tokens=32",
        "eft.sft.max_steps=2", "eft.sft.gradient_accumulation_steps=1",
        "prompts.per_iteration=4", "actor.k=2", "judge.n=2", "actor.sampling.max_new_tokens=16",
        "judge.sampling.max_new_tokens=0", "eval.enabled=false", "dpo.max_steps=1",
        "dpo.global_batch_size=2", "dpo.max_length=512",
    ])
    [summary] = run_pipeline(cfg)
    run = Path(RunLayout(str(tmp_path), "real-eft").run)

    pool_m = store.read_manifest(str(run / "iter_0/prompt_pool"))
    assert pool_m.counts["seeds"] == 8 and pool_m.counts["requests"] == 2 and pool_m.counts["completions"] == 2
    pool = store.read_jsonl(pool_m.files["pool"], Prompt)
    assert len(pool) == 8 + pool_m.counts["generated_kept"]  # include_seeds: the 8 seeds, then what survived

    eft_m = store.read_manifest(str(run / "iter_0/eft"))
    assert (eft_m.counts["train_groups"], eft_m.counts["heldout_groups"], eft_m.counts["examples"]) == (4, 2, 12)
    assert eft_m.counts["steps"] == 2
    for key in ("agreement_before", "agreement_after"):
        assert eft_m.stats[key]["pairs"] == 6 and 0 <= eft_m.stats[key]["agreement"] <= 1
    m0 = Path(eft_m.files["model"])
    assert (m0 / "model.safetensors").is_file()
    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(m0).num_parameters() > 100_000_000

    # iteration 1 started from M_0 and trained M_1
    assert store.read_manifest(str(run / "iter_1/generate")).inputs["model"] == eft_m.digest
    assert (run / "iter_1/train/model/model.safetensors").is_file()
    assert summary["model"] == str(run / "iter_1/train/model")
    print("stage seconds:", {f"{p.parent.parent.name}/{p.parent.name}": store.read_manifest(str(p.parent)).duration_s
                             for p in sorted(run.rglob("manifest.json"))})
