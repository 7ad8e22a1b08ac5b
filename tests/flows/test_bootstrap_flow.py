"""The DAG with the iteration-0 stages on: prompt pool and EFT before iteration 1 (fake engine and trainers)."""

import json
from pathlib import Path

import pytest

from metareward.runstore import store
from metareward.config import load_config
from metareward.records import Prompt
from metareward.runstore.layout import RunLayout


@pytest.fixture
def fake_sft(monkeypatch):
    import metareward.training.sft

    calls = []

    def train_sft(rows, model_path, output_dir, sft, **kw):
        calls.append((len(rows), model_path))
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        Path(output_dir, "config.json").write_text(json.dumps({"examples": len(rows), "parent": model_path}))
        return {"steps": 1, "train_loss": 1.0, "n_examples": len(rows), "log_history": [{"loss": 1.0}]}

    monkeypatch.setattr(metareward.training.sft, "train_sft", train_sft)
    return calls


def _mtimes(root):
    return {p: p.stat().st_mtime_ns for p in Path(root).rglob("manifest.json")}


def test_prompt_pool_and_eft_then_iteration_1_from_m0(tmp_path, prefect_harness, fake_trainer, fake_sft):
    from flows.run import run_pipeline

    # smoke-eft with the fake engine; parse=lines turns the fake engine's plain answers into prompts
    cfg = load_config("smoke-eft", [f"storage.root={tmp_path}", "engine.backend=fake", "execution.stage_process=inline", "run.name=boot",
                                    "eval.enabled=false", "prompt_pool.include_seeds=false"])
    [summary] = run_pipeline(cfg)
    run = Path(RunLayout(str(tmp_path), "boot").run)
    pool_m = store.read_manifest(str(run / "iter_0/prompt_pool"))
    eft_m = store.read_manifest(str(run / "iter_0/eft"))
    assert pool_m is not None and eft_m is not None
    assert pool_m.counts["seeds"] == 8 and pool_m.counts["requests"] == 8 and pool_m.counts["pool"] > 0

    # iteration 1 sampled from the generated pool, not from the seeds
    prompts_m = store.read_manifest(str(run / "iter_1/prompts"))
    pool_ids = {p.id for p in store.read_jsonl(pool_m.files["pool"], Prompt)}
    picked = store.read_jsonl(prompts_m.files["prompts"], Prompt)
    assert picked and {p.id for p in picked} <= pool_ids and all(i.startswith("g") for i in pool_ids)
    assert prompts_m.inputs["pool"] == pool_m.digest

    # EFT trained the seed model; iteration 1's actor and DPO started from M_0
    [(n_examples, seed_path)] = fake_sft
    assert n_examples == eft_m.counts["examples"] == 12
    m0_dir = str(run / "iter_0/eft/model")
    generate_m = store.read_manifest(str(run / "iter_1/generate"))
    assert generate_m.inputs["model"] == eft_m.digest
    assert fake_trainer[0][1] == m0_dir and seed_path != m0_dir
    assert summary["prompts"] == len(picked)
    assert summary["eft"]["examples"] == 12 and summary["prompt_pool"]["pool"] == len(pool_ids)

    # a rerun recomputes nothing
    before = _mtimes(run)
    run_pipeline(cfg)
    assert _mtimes(run) == before and len(fake_sft) == 1

    # an EFT setting re-keys EFT and everything that used M_0, but not the prompt pool
    run_pipeline(load_config("smoke-eft", [f"storage.root={tmp_path}", "engine.backend=fake", "execution.stage_process=inline", "run.name=boot",
                                           "eval.enabled=false", "prompt_pool.include_seeds=false",
                                           "eft.sft.learning_rate=1e-5"]))
    after = _mtimes(run)
    changed = sorted(str(p.relative_to(run).parent) for p in after if after[p] != before[p])
    assert "iter_0/eft" in changed and "iter_1/generate" in changed and "iter_1/train" in changed
    assert "iter_0/prompt_pool" not in changed and "iter_1/prompts" not in changed
