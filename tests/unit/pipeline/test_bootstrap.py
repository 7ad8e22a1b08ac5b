"""The iteration-0 stages (prompt pool, EFT) and the prompts stage on top of them, on canned engines."""

import json
from pathlib import Path

import pytest

from metareward.pipeline import bootstrap, modelrefs, stages
from metareward.runstore import store
from metareward.config import load_config
from metareward.engines.base import Completion
from metareward.engines.fake import FakeEngine
from metareward.inputs.prompt_pool import INSTRUCTION
from metareward.records import ModelRef, Prompt

SEED = ModelRef(uri="fake-seed", digest="seed", iteration=0)

# What the prompt writer returns for requests 0, 1, 2 (see test_prompt_pool_stage for the bookkeeping).
CANNED = [
    "<task>Invent a game for cats on a rainy afternoon</task>\n<task>Why do cats purr?</task>",
    "<task>Invent a game for cats on a rainy afternoon!!</task>\n<task>What is the capital of France?</task>",
    "<task>Plan a three-day trip to Lisbon on a budget</task>\n<task>Hi</task>\n"
    "<task>write a short poem about autumn leaves</task>\n<task>unfinished",
]


class PoolEngine(FakeEngine):
    """The fake engine, plus canned prompt-writer output (request i -> CANNED[i])."""

    def generate(self, prompts, n, sampling, seed):
        if prompts and prompts[0].startswith(INSTRUCTION):
            return [[Completion(text=CANNED[i % len(CANNED)], n_tokens=9, finish_reason="stop")] * n
                    for i in range(len(prompts))]
        return super().generate(prompts, n, sampling, seed)


@pytest.fixture
def bench(tmp_path):
    f = tmp_path / "alpaca_eval.json"
    f.write_text(json.dumps([{"instruction": "What is the capital of France?"},
                             {"instruction": "Explain why the sky looks blue during the day and at sunset"}]))
    return str(f)


def _cfg(tmp_path, *extra):
    return load_config("smoke", [f"storage.root={tmp_path}", "engine.backend=fake", "run.name=boot", *extra])


@pytest.fixture
def pool_engine(monkeypatch):
    monkeypatch.setattr(modelrefs, "open_model_engine", lambda cfg, model: PoolEngine(model.uri))


def test_prompt_pool_stage(tmp_path, bench, pool_engine):
    """Source: the 24 smoke prompts; the benchmark's 8-gram 'explain why the sky looks blue during the' removes
    p000, so 23 remain: 15 seeds + 8 held out (p016-p023). Requests 0-2 parse into 7 prompts ('unfinished' has
    no closing tag):
      'Why do cats purr?' (= held-out p016) and 'write a short poem about autumn leaves' (= seed p001)
                                             -> 2 duplicates of the reference set
      'Hi'                                   -> too short
      'Invent a game ... afternoon!!'        -> near-duplicate of request 0's prompt (identical once normalised)
      'What is the capital of France?'       -> contaminated (AlpacaEval)
      leaving 2 new prompts: the cats game and the Lisbon trip."""
    cfg = _cfg(tmp_path, "prompt_pool.enabled=true", "prompt_pool.requests=3",
               f"prompts.decontam.benchmarks={{alpaca_eval: {bench}}}")
    m = bootstrap.prompt_pool(cfg, 0, SEED)
    c = m.counts
    assert (c["source_contaminated"], c["source_contaminated_alpaca_eval"], c["seeds"]) == (1, 1, 15)
    assert (c["requests"], c["completions"], c["parsed"]) == (3, 3, 7)
    assert (c["generated_duplicates_of_reference"], c["generated_too_short"], c["generated_near_duplicates_removed"],
            c["generated_contaminated"], c["generated_contaminated_alpaca_eval"]) == (2, 1, 1, 1, 1)
    pool = store.read_jsonl(m.files["pool"], Prompt)
    assert [p.prompt for p in pool] == ["Invent a game for cats on a rainy afternoon",
                                        "Plan a three-day trip to Lisbon on a budget"]
    assert c["generated_kept"] == c["pool"] == 2
    assert m.uri.endswith("/boot/iter_0/prompt_pool")
    # include_seeds adds the 15 seeds in front; size caps the new prompts
    m2 = bootstrap.prompt_pool(_cfg(tmp_path, "prompt_pool.requests=3", "prompt_pool.include_seeds=true",
                                    "prompt_pool.size=1", f"prompts.decontam.benchmarks={{alpaca_eval: {bench}}}"),
                               0, SEED)
    assert (m2.counts["pool"], m2.counts["generated_over_size"]) == (16, 1)


def test_prompts_stage_samples_the_pool_and_counts_contamination(tmp_path, bench, pool_engine):
    cfg = _cfg(tmp_path, "prompt_pool.requests=3", "prompts.per_iteration=1",
               f"prompts.decontam.benchmarks={{alpaca_eval: {bench}}}")
    pool_m = bootstrap.prompt_pool(cfg, 0, SEED)
    picked = [store.read_jsonl(stages.prompts(cfg, t, pool_m).files["prompts"], Prompt) for t in (1, 2)]
    # 2 pool prompts, 1 per iteration, without replacement: iterations 1 and 2 get one each, never the same
    assert {picked[0][0].id, picked[1][0].id} == {"g00000", "g00004"}
    m = stages.prompts(cfg, 1, pool_m)
    assert (m.counts["contaminated"], m.counts["contaminated_alpaca_eval"], m.counts["pool"]) == (1, 1, 2)
    assert m.counts["eval_prompts"] == 8 and m.inputs["pool"] == pool_m.digest


def test_prompts_stage_iterations_never_reuse_a_prompt(tmp_path):
    """16 training prompts, 5 per iteration: iterations 1-3 use 15 distinct prompts, derived from the seed alone."""
    cfg = _cfg(tmp_path, "prompts.per_iteration=5")
    ids = [p.id for t in (1, 2, 3) for p in store.read_jsonl(stages.prompts(cfg, t).files["prompts"], Prompt)]
    assert len(ids) == 15 and len(set(ids)) == 15
    evals = {p.id for p in store.read_jsonl(stages.prompts(cfg, 1).files["eval"], Prompt)}
    assert not evals & set(ids)


def test_a_changed_benchmark_file_rekeys_the_prompts_stage(tmp_path, bench):
    cfg = _cfg(tmp_path, f"prompts.decontam.benchmarks={{alpaca_eval: {bench}}}")
    first = stages.prompts(cfg, 1)
    Path(bench).write_text(json.dumps([{"instruction": "Nothing in the smoke set looks like this"}]))
    second = stages.prompts(cfg, 1)
    assert second.key != first.key and second.counts["contaminated"] == 0 and first.counts["contaminated"] == 1


@pytest.fixture
def fake_sft(monkeypatch):
    import metareward.training.sft

    calls = []

    def train_sft(rows, model_path, output_dir, sft, **kw):
        calls.append((rows, model_path))
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        Path(output_dir, "config.json").write_text(json.dumps({"examples": len(rows), "parent": model_path}))
        return {"steps": 2, "train_loss": 1.0, "n_examples": len(rows), "log_history": [{"loss": 1.0}]}

    monkeypatch.setattr(metareward.training.sft, "train_sft", train_sft)
    return calls


def test_eft_stage_rubric_mode(tmp_path, fake_sft):
    """Shipped set: 6 trees x 3 ranked replies; eval_fraction 0.34 holds out 2 trees (3 pairs each); the other
    4 give 12 examples with scores 5, 4, 3 four times each (no single most common score to down-sample)."""
    cfg = _cfg(tmp_path, "eft.enabled=true", "eft.judgments=rubric", "eft.eval_fraction=0.34", "eft.eval_n=2")
    m = bootstrap.eft(cfg, 0, SEED)
    c = m.counts
    assert (c["groups"], c["train_groups"], c["heldout_groups"]) == (6, 4, 2)
    assert (c["examples_built"], c["examples_downsampled"], c["examples"]) == (12, 0, 12)
    assert m.stats["score_histogram"] == {"0": 0, "1": 0, "2": 0, "3": 4, "4": 4, "5": 4}
    for key in ("agreement_before", "agreement_after"):
        assert m.stats[key]["pairs"] == 6 and 0 <= m.stats[key]["agreement"] <= 1
    [(rows, parent)] = fake_sft
    assert parent == "fake-seed" and len(rows) == 12
    assert rows[0]["completion"][0]["content"].rsplit("Score: ", 1)[1] in "345"
    m0 = stages.model_of(m)
    assert m0.uri.endswith("/boot/iter_0/eft/model") and m0.iteration == 0
    assert bootstrap.eft(cfg, 0, SEED).key == m.key and len(fake_sft) == 1  # done: skipped


def test_eft_stage_generate_mode_keeps_only_human_consistent_trees(tmp_path, fake_sft):
    """The fake judge scores by length (see engines/fake.py), so a tree is kept only when its better-ranked
    replies got strictly higher parsed scores; every kept tree gives 3 examples in rank order."""
    cfg = _cfg(tmp_path, "eft.judgments=generate", "eft.n=2", "eft.downsample=false", "judge.scoring=parse",
               "meta_judge.scoring=parse", "meta_judge.sampling.max_new_tokens=8")
    m = bootstrap.eft(cfg, 0, SEED)
    c = m.counts
    assert c["judgments_sampled"] == c["train_groups"] * 3 * 2
    assert c["examples"] == 3 * (c["train_groups"] - c["groups_inconsistent"]) > 0
    from metareward.inputs.eft import EFTExample

    rows = store.read_jsonl(m.files["examples"], EFTExample)
    for g in {r.group_id for r in rows}:
        scores = [r.score for r in sorted((r for r in rows if r.group_id == g), key=lambda r: r.rank)]
        assert scores == sorted(scores, reverse=True) and len(set(scores)) == 3
        assert all(r.completion.endswith(f"Score: {r.score}") for r in rows if r.group_id == g)
