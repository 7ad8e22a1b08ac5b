"""The whole DAG on the fake engine (canned judge text) and a fake trainer: plumbing, caching, re-keying."""

import json
from pathlib import Path

import pytest

from metareward.runstore import store
from metareward.config import load_config
from metareward.records import Judgment, MetaVerdict, PreferencePair, Response
from metareward.runstore.layout import RunLayout

STAGES = ["prompts", "generate", "judge", "meta_judge", "pairs", "train", "benchmark"]


def _cfg(root, *extra):
    return load_config("smoke", [f"storage.root={root}", "engine.backend=fake", "execution.stage_process=inline", "run.name=fake",
                                 "run.iterations=2", "pairs.judge_pairs=[true, false]", *extra])


def _mtimes(root):
    return {p: p.stat().st_mtime_ns for p in Path(root).rglob("manifest.json")}


def test_two_iterations_then_cached_then_rekeyed(tmp_path, prefect_harness, fake_trainer):
    from flows.run import run_pipeline

    cfg = _cfg(tmp_path)
    summaries = run_pipeline(cfg)
    run = Path(RunLayout(str(tmp_path), "fake").run)

    # iteration 1 has every stage; iteration 2 has no meta-judge (pairs.judge_pairs=[true, false])
    for stage in STAGES:
        assert (run / "iter_1" / stage / "manifest.json").is_file(), stage
    assert not (run / "iter_2" / "meta_judge").exists()
    assert (run / "iter_0" / "benchmark" / "manifest.json").is_file()

    responses = store.read_jsonl(str(run / "iter_1/generate/responses.jsonl"), Response)
    judgments = store.read_jsonl(str(run / "iter_1/judge/judgments.jsonl"), Judgment)
    verdicts = store.read_jsonl(str(run / "iter_1/meta_judge/verdicts.jsonl"), MetaVerdict)
    pairs = store.read_jsonl(str(run / "iter_1/pairs/pairs.jsonl"), PreferencePair)
    assert len(responses) == 16 * 4 and len(judgments) == 16 * 4 * 3
    targets = {v.response_id for v in verdicts}
    assert len(verdicts) == len(targets) * 3 * 2  # C(3,2) pairs x 2 orders per disputed response
    assert {p.kind for p in pairs} == {"actor", "judge"}
    assert summaries[0]["actor_pairs"] + summaries[0]["judge_pairs"] == len(pairs)
    # iteration 2 generated with M_1, the model iteration 1 trained
    assert fake_trainer[1][1] == str(run / "iter_1" / "train" / "model")
    assert (run / "iter_1" / "summary.md").is_file()
    # Prefect's records of every flow and task result are JSON: nothing in the store is a pickle
    records = [p for p in (run / ".prefect-results").rglob("*") if p.is_file()]
    parsed = [json.loads(p.read_bytes()) for p in records]  # a flow's result is its JSON alone, a task's a record
    kinds = {r["metadata"]["serializer"]["type"] for r in parsed if isinstance(r, dict) and "metadata" in r}
    assert len(records) > 10 and kinds == {"json"}

    # a second run recomputes nothing
    before = _mtimes(run)
    n_calls = len(fake_trainer)
    run_pipeline(cfg)
    assert _mtimes(run) == before and len(fake_trainer) == n_calls

    # dpo.beta re-keys training and what follows it; iteration 1's data stages are untouched
    run_pipeline(_cfg(tmp_path, "dpo.beta=0.2"))
    after = _mtimes(run)
    changed = sorted(str(p.relative_to(run).parent) for p in after if after[p] != before[p])
    assert changed == ["iter_1/answers", "iter_1/benchmark", "iter_1/train"] + [
        f"iter_2/{s}" for s in ["answers", "benchmark", "generate", "judge", "pairs", "train"]]


def test_collapsed_judge_gives_no_actor_pairs(tmp_path, prefect_harness, fake_trainer, monkeypatch):
    """Every score 5: no spread, so every prompt is skipped as a tie and training refuses to run."""
    from metareward.pipeline import modelrefs, stages
    from metareward.engines.fake import FakeEngine

    cfg = _cfg(tmp_path, "run.iterations=1", "judge.scoring=parse", "meta_judge.scoring=parse",
               "meta_judge.sampling.max_new_tokens=16", "health.enabled=false")  # the gates: test_health_gates.py
    monkeypatch.setattr(modelrefs, "open_model_engine", lambda cfg, model: FakeEngine(collapse=True))
    from flows.run import run_pipeline

    with pytest.raises(stages.StageError, match="no preference pair survived"):
        run_pipeline(cfg)
    m = store.read_manifest(RunLayout(str(tmp_path), "fake").stage(1, "pairs"))
    assert m.counts["actor_pairs"] == 0 and m.counts["actor_tie"] == 16


def test_the_iteration_flow_is_its_six_stage_calls_and_the_loop_reads_no_store():
    """The flow bodies read like the algorithm: the iteration calls the six stages (on `RunTasks`) and returns
    M_t; the loop passes M_t on and never reads the run store."""
    import ast
    import inspect

    from flows import iteration, meta_rewarding

    [fn] = ast.parse(inspect.getsource(iteration.meta_rewarding_iteration.fn)).body
    calls = sorted((n.lineno, n.col_offset, n.func.attr) for n in ast.walk(fn) if isinstance(n, ast.Call)
                   and isinstance(n.func, ast.Attribute) and isinstance(n.func.value, ast.Name) and n.func.value.id == "tasks")
    assert [c[-1] for c in calls] == ["prompts", "generate", "judge", "meta_judge", "pairs", "train"]
    assert isinstance(fn.body[-1], ast.Return)
    names = {n.id for n in ast.walk(ast.parse(inspect.getsource(meta_rewarding))) if isinstance(n, ast.Name)}
    assert not names & {"store", "read_manifest", "train_manifest"}
