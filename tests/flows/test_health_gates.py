"""A judge collapse (the fake engine gives every response a 5) stops the iteration at the judge's health gate,
with a report in the store and an error naming the gates; every stage finished so far is kept and reused."""

import json
from pathlib import Path

import pytest

from metareward.pipeline import modelrefs, stages
from metareward.config import load_config
from metareward.runstore.layout import RunLayout


def _cfg(root, *extra):
    return load_config("smoke", [f"storage.root={root}", "engine.backend=fake", "execution.stage_process=inline", "run.name=collapse",
                                 "run.iterations=1", "judge.scoring=parse", "meta_judge.scoring=parse",
                                 "meta_judge.sampling.max_new_tokens=16", *extra])


def _mtimes(run: Path):
    return {str(p.relative_to(run)): p.stat().st_mtime_ns for p in run.rglob("manifest.json")}


def test_judge_collapse_stops_the_iteration_at_the_gate(tmp_path, prefect_harness, fake_trainer, monkeypatch):
    from flows.run import run_pipeline
    from metareward.engines.fake import FakeEngine

    monkeypatch.setattr(modelrefs, "open_model_engine", lambda cfg, model: FakeEngine(collapse=True))
    with pytest.raises(stages.StageError) as e:
        run_pipeline(_cfg(tmp_path))
    run = Path(RunLayout(str(tmp_path), "collapse").run)
    report_uri = run / "iter_1" / "health.json"
    assert str(e.value) == (
        "judge iter 1: health gate failed: health.max_tie_rate: tie_rate 1.0 > 0.9; health.min_score_entropy: "
        f"score_entropy 0.0 < 0.1; health.max_share_max_score: share_max_score 1.0 > 0.9 (report: {report_uri})")
    report = json.loads(report_uri.read_text())["judge"]
    assert report["passed"] is False and report["metrics"]["share_max_score"] == 1.0
    assert report["metrics"]["score_histogram"]["5"] == 16 * 4 * 3
    done = _mtimes(run)
    assert sorted(done) == ["iter_1/generate/manifest.json", "iter_1/judge/manifest.json",
                            "iter_1/prompts/manifest.json"]  # nothing after the gate ran, nothing before is lost
    assert fake_trainer == []

    # The user relaxes the judge gates: prompts, generate and judge are reused as they are; the meta-judge finds
    # no disputed response and every prompt is a tie, so the pairs gate stops the iteration before training.
    relaxed = _cfg(tmp_path, "health.max_tie_rate=1.0", "health.min_score_entropy=0", "health.max_share_max_score=1")
    with pytest.raises(stages.StageError, match=r"^pairs iter 1: health gate failed: health.min_pairs: pairs 0 < 1"):
        run_pipeline(relaxed)
    after = _mtimes(run)
    assert {k: after[k] for k in done} == done
    assert json.loads(report_uri.read_text())["judge"]["passed"] is True
    assert fake_trainer == []
