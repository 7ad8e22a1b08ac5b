"""The benchmark stage with the fake engine: MT-Bench- and AlpacaEval-style results in the manifest, each with
its judge's identity, the harnesses' files on disk, and a rerun that asks the judge nothing."""

import json
from pathlib import Path

import pytest

from metareward.pipeline import modelrefs, stages
from metareward.runstore import store
from metareward.config import ConfigError, load_config
from metareward.evals import agreement, alpaca, mtbench
from metareward.records import ModelRef

M0 = ModelRef(uri="fake-m0", digest="d0d0d0d0d0d0d0d0", iteration=0)
M1 = ModelRef(uri="fake-m1", digest="d1d1d1d1d1d1d1d1", iteration=1)


def _benchmark(cfg, t, model, previous=None):
    """The answers stage, then the benchmark stage, as the report flow runs them."""
    prompts_m = stages.prompts(cfg, max(t, 1))
    return stages.benchmark(cfg, t, model, prompts_m, stages.answers(cfg, t, model, prompts_m), previous)


@pytest.fixture
def cfg(tmp_path, monkeypatch):
    monkeypatch.setattr(modelrefs, "base_model", lambda cfg: M0)   # no model resolution in a unit test
    return load_config("smoke", [f"storage.root={tmp_path}", "engine.backend=fake", "run.name=b"])


def test_benchmark_stage_records_results_and_judges(cfg, tmp_path):
    m = _benchmark(cfg, 1, M1)
    mt, al = m.stats["mt_bench"], m.stats["alpaca_eval"]
    assert mt["judge"] == "local:fake:M_0#d0d0d0d0d0d0" == al["judge"]   # M_0 judges every iteration
    assert mt["label"] == al["label"] == "not comparable to published"
    assert mt["n"] + mt["n_failed"] == 6 and m.counts["mt_bench_judgments"] == 6   # 3 questions x 2 turns
    assert al["n_total"] == 4 and "lc_win_rate_approx" in al

    # the files are FastChat's / alpaca_eval's, and scoring them again gives the manifest's numbers
    folder = Path(m.uri)
    judged = mtbench.read_judgments(m.files["mt_bench_judgments"])
    assert Path(m.files["mt_bench_judgments"]).parent == folder / "mt_bench" / "model_judgment"
    cats = {q.question_id: q.category for q in mtbench.read_questions(m.files["mt_bench_questions"])}
    assert mtbench.score(judged, cats)["score"] == mt["score"]
    assert set(mtbench.read_answers(str(folder / "mt_bench/model_answer/b-M1.jsonl"))) == {1, 2, 3}
    ann = alpaca.read_annotations(str(folder / "alpaca_eval/annotations.json"))
    assert alpaca.evaluate(ann)["win_rate"] == al["win_rate"]
    outputs = json.loads((folder / "alpaca_eval/model_outputs.json").read_text())
    assert [o["generator"] for o in outputs] == ["b-M1"] * 4

    from metareward.reporting.summary import _bench   # the iteration report shows each result with its judge

    assert _bench(m)["mt_bench"]["judge"] == mt["judge"] and _bench(m)["alpaca_eval"]["label"] == al["label"]

    # recomputing the stage (its manifest gone) answers again but takes every judgment from the cache
    store.invalidate(m.uri)
    again = _benchmark(cfg, 1, M1)
    assert again.stats["judge_cache"] == {"hits": 16, "misses": 0}   # 6 x 2 rating passes + 4 annotations
    assert again.stats["mt_bench"]["score"] == mt["score"]


def test_judge_quality_of_the_own_judge(cfg, tmp_path):
    labels = tmp_path / "labels.jsonl"
    labels.write_text("".join(json.dumps({"id": f"x{i}", "prompt": "Say something.", "response_a": "a" * (10 + i),
                                          "response_b": "b" * 40, "label": "b"}) + "\n" for i in range(4)))
    cfg = load_config("smoke", [f"storage.root={tmp_path}", "engine.backend=fake", "run.name=q",
                                "eval.mt_bench.enabled=false", "eval.alpaca_eval.enabled=false",
                                f"eval.judge_quality.labels={labels}"])
    m = _benchmark(cfg, 1, M1)
    q = m.stats["judge_quality"]
    rows = agreement.read_verdicts(m.files["judge_quality_verdicts"])
    # the manifest's agreement is recomputed from the written verdicts and the labels
    assert q["agreement"] == agreement.agreement({f"x{i}": "b" for i in range(4)},
                                                 {k: v["verdict"] for k, v in rows.items()})["agreement"]
    assert q["n"] + q["n_unscored"] == 4 and q["judge"] == "self (M_1)"


def test_judge_config_errors():
    with pytest.raises(ConfigError, match="an 'openai' judge needs a model name"):
        load_config("smoke", ["eval.mt_bench.judge.kind=openai"])
    with pytest.raises(ConfigError, match="arena_hard needs questions and baseline_answers"):
        load_config("smoke", ["eval.arena_hard.enabled=true"])
