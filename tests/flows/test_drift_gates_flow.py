"""The drift guard in the whole flow: a fake model whose own judge comes to reward length (and whose answers grow
each iteration) while M_0, the reference judge, prefers short answers. The run stops at the benchmark of the
iteration where the gate trips, with the figures in the summary and health.json naming the gate; nothing of the
next iteration starts, and every finished stage is kept."""

import json
import re
from pathlib import Path

import pytest

from metareward.config import load_config
from metareward.engines.base import Completion
from metareward.engines.fake import FakeEngine, _h
from metareward.method.prompts import JUDGE_HEAD
from metareward.pipeline import modelrefs, stages
from metareward.runstore.layout import RunLayout


class LengthLovingFake(FakeEngine):
    """M_t (t >= 1) scores an answer by its length, min(5, chars // 40); M_0 the other way, max(0, 5 - chars // 40).
    M_t's answers are three to five phrases (51 to 85 chars) longer than M_{t-1}'s, so on every prompt the own
    judge's score rises and the reference's falls by at least one point (until the 0..5 scale runs out)."""

    def __init__(self, iteration: int):
        super().__init__()
        self.iteration = iteration

    def _one(self, prompt: str, stream: int) -> Completion:
        if prompt.startswith(JUDGE_HEAD):
            length = len(re.search(r"<response>(.*)</response>", prompt, re.S).group(1))
            score = max(0, 5 - length // 40) if self.iteration == 0 else min(5, length // 40)
            text = f"Judged by length.\nScore: {score}"
        elif "Judgment A" in prompt:
            return super()._one(prompt, stream)
        else:
            phrases = _h(prompt) % 4 + _h(prompt, stream) % 2 + 4 * self.iteration  # the K samples differ a little
            text = "Here is an answer" + " with more detail" * phrases + "."
        return Completion(text=text, n_tokens=len(text.split()), finish_reason="stop")


def _cfg(root, *extra):
    return load_config("smoke", [f"storage.root={root}", "engine.backend=fake", "execution.stage_process=inline",
                                 "run.name=drift", "run.iterations=3", "judge.scoring=parse",
                                 "meta_judge.scoring=parse", "meta_judge.sampling.max_new_tokens=16",
                                 "eval.mt_bench.enabled=false", "eval.alpaca_eval.enabled=false", *extra])


@pytest.fixture
def drifting(monkeypatch):
    monkeypatch.setattr(modelrefs, "open_model_engine", lambda cfg, model: LengthLovingFake(model.iteration))


def test_self_preference_excess_stops_the_run_at_iteration_1(tmp_path, prefect_harness, fake_trainer, drifting):
    from flows.run import run_pipeline

    with pytest.raises(stages.StageError, match=r"^benchmark iter 1: drift gate failed: "
                                                r"health.drift.max_self_preference_excess: self_preference_excess"):
        run_pipeline(_cfg(tmp_path))
    run = Path(RunLayout(str(tmp_path), "drift").run)
    health = json.loads((run / "iter_1" / "health.json").read_text())["drift"]
    m = health["metrics"]
    assert health["passed"] is False and len(health["failed"]) == 1
    # the own judge (M_1) prefers M_1's longer answers on every held-out prompt, the reference (M_0) never
    assert m["self_preference"] == 1.0 and m["ref_preference"] == 0.0 and m["self_preference_excess"] == 1.0
    assert m["own_change"] > 0 > m["ref_change"] and m["cur_chars"] > m["prev_chars"]
    assert m["own_preferred_chars"] == m["cur_chars"] and m["ref_preferred_chars"] == m["prev_chars"]
    assert m["reference_judge"].startswith("local:M_0#") and m["own_judge"] == "M_1" and m["prompts"] == 8
    # the figures are in the iteration's summary too, and iteration 2 never started (M_1 judges nothing)
    assert json.loads((run / "iter_1" / "summary.json").read_text())["iteration"] == 1
    assert not (run / "iter_2").exists() and len(fake_trainer) == 1
    rows = [json.loads(line) for line in (run / "iter_1" / "benchmark" / "drift.jsonl").read_text().splitlines()]
    assert len(rows) == 8 and all(r["own_cur"] > r["own_prev"] and r["ref_cur"] < r["ref_prev"] for r in rows)


def test_own_up_reference_down_twice_stops_the_run_at_iteration_2(tmp_path, prefect_harness, fake_trainer,
                                                                   drifting):
    """With the excess gate out of reach, the other gate: own judge up and reference down in k=2 iterations in a row.
    Iteration 1 passes (one such iteration), iteration 2 trips; a rerun with k=3 reuses every stage and goes on."""
    from flows.run import run_pipeline

    relaxed = ["health.drift.max_self_preference_excess=1.0"]
    with pytest.raises(stages.StageError, match=r"^benchmark iter 2: drift gate failed: health.drift.k: the own "
                                                r"judge's mean rose while the reference's fell in 2 iterations"):
        run_pipeline(_cfg(tmp_path, *relaxed))
    run = Path(RunLayout(str(tmp_path), "drift").run)
    assert json.loads((run / "iter_1" / "health.json").read_text())["drift"]["passed"] is True
    report = json.loads((run / "iter_2" / "health.json").read_text())["drift"]
    assert [h["own_judge"] for h in report["history"]] == ["M_1", "M_2"] and not (run / "iter_3").exists()
    manifests = {p: p.stat().st_mtime_ns for p in run.rglob("manifest.json")}
    with pytest.raises(stages.StageError, match=r"^benchmark iter 3: drift gate failed: health.drift.k: .* in 3 "):
        run_pipeline(_cfg(tmp_path, *relaxed, "health.drift.k=3"))
    assert {p: p.stat().st_mtime_ns for p in manifests} == manifests  # thresholds re-key nothing
