"""What tracking logs, worked out by hand from a tiny run store; the servers: tests/flows/test_tracking_flow.py."""

from __future__ import annotations

from metareward.config import load_config
from metareward.records import Manifest
from metareward.reporting import tracking
from metareward.runstore import store
from metareward.runstore.layout import RunLayout


def test_numbers_flattens_and_names_as_mlflow_accepts():
    got = tracking.numbers({"benchmark": {"mt_bench": {"score": 5, "label": "x"}}, "position_weights": {"w1": 0.25},
                            "score_histogram": {"2": 95}, "bad name!": 1, "nan": float("nan"), "none": None})
    assert got == {"benchmark.mt_bench.score": 5.0, "position_weights.w1": 0.25, "score_histogram.2": 95.0,
                   "bad name_": 1.0}


def test_iteration_metrics_and_the_dpo_curve(tmp_path):
    run = RunLayout(str(tmp_path), "r")
    store.write_json(run.summary(1, "json"), {"iteration": 1, "actor_pairs": 12, "judge_parse_rate": 0.75,
                                              "durations_s": {"train": 4.5}})
    store.write_json(run.health(1), {"judge": {"passed": True, "metrics": {"tie_rate": 0.125}, "failed": []}})
    assert tracking.iteration_metrics(run, 1) == {"actor_pairs": 12.0, "judge_parse_rate": 0.75,
                                                  "durations_s.train": 4.5, "health.judge.tie_rate": 0.125,
                                                  "health.judge.passed": 1.0}
    hist = store.join(run.stage(1, "train"), "log_history.json")
    store.write_json(hist, [{"loss": 0.7, "rewards/accuracies": 0.5, "step": 1, "epoch": 0.5},
                            {"loss": 0.6, "rewards/accuracies": 1.0, "step": 2, "epoch": 1.0},
                            {"train_runtime": 3.0, "train_loss": 0.65, "step": 2}])
    train = Manifest(stage="train", iteration=1, run="r", key="k", uri=run.stage(1, "train"),
                     files={"log_history": hist}, digests={"model": "m1"})
    assert tracking.dpo_curve({"train": train}) == [(1, {"loss": 0.7, "rewards/accuracies": 0.5}),
                                                    (2, {"loss": 0.6, "rewards/accuracies": 1.0})]
    assert tracking.digest_tags(1, {"train": train}) == {"iter1.train.digest": train.digest, "iter1.model.digest": "m1"}


def test_the_target_names_no_credentials_and_the_marker_is_per_destination_and_data(tmp_path, monkeypatch):
    cfg = load_config("smoke", [f"storage.root={tmp_path}", "tracking.backend=mlflow", "tracking.experiment=e"])
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "https://user:pw@mlflow.example/")
    assert tracking.target(cfg.tracking) == "mlflow https://mlflow.example/ e"
    run, tags = RunLayout.of(cfg), {"iter1.train.digest": "d1"}
    store.write_json(run.tracked(1), {"target": tracking.target(cfg.tracking), "tags": tags})
    assert tracking.already_logged(run, 1, cfg.tracking, tags)
    assert not tracking.already_logged(run, 1, cfg.tracking, {"iter1.train.digest": "d2"})  # a stage recomputed
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert not tracking.already_logged(run, 1, cfg.tracking, tags)


def test_off_by_default_logs_nothing(tmp_path):
    cfg = load_config("smoke", [f"storage.root={tmp_path}"])
    assert cfg.tracking.backend == "none" and tracking.log_iteration(cfg, 1) is None


def test_a_damaged_stage_is_not_logged(tmp_path):
    run = RunLayout(str(tmp_path), "r")
    uri = store.join(run.stage(1, "pairs"), "pairs.jsonl")
    store.write_manifest(Manifest(stage="pairs", iteration=1, run="r", key="k", uri=run.stage(1, "pairs"),
                                  files={"pairs": uri}, digests={"pairs": store.write_jsonl(uri, [{"a": 1}])}))
    assert list(tracking.manifests(run, 1)) == ["pairs"]
    store.write_jsonl(uri, [{"a": 2}])
    import pytest

    with pytest.raises(store.StoreError, match=rf"^pairs iter 1: damaged: {uri}: content does not match"):
        tracking.manifests(run, 1)


def test_the_judge_free_measures_are_curves_over_m0_to_mt(tmp_path):
    """Iteration 1's summary holds M_1's measures and M_0's (the baseline): M_1's go to step 1 under their own names
    (not flattened a second time under benchmark.*), M_0's to step 0; the drift gate's figures are the drift/* ones,
    so from health.json only whether it passed."""
    run = RunLayout(str(tmp_path), "r")
    ci = {"value": 0.4167, "lo": 0.25, "hi": 0.5833, "n": 12}
    bench = {"model_iteration": 1, "mt_bench": {"score": 5, "judge": "j"},
             "ifeval": {"prompt_level_strict_acc": 5 / 12, "ci95": {"prompt_level_strict_acc": ci}, "n_prompts": 12,
                        "judge": "none (checked by code)"},
             "llmbar": {"pooled": {"accuracy": 0.625, "agreement": 0.75, "n": 8,
                                   "accuracy_ci95": {"value": 0.625, "lo": 0.25, "hi": 0.875, "n": 8}},
                        "sets": {"Adversarial Neighbor": {"accuracy": 0.5, "n": 4}}, "judge": "self (M_1)"},
             "drift": {"gap": 1.5, "self_preference": 0.75, "ref_preference": 0.25, "self_preference_excess": 0.5,
                       "own_judge": "M_1"}}
    baseline = {"model_iteration": 0, "ifeval": {"prompt_level_strict_acc": 0.25, "ci95": {}}}
    store.write_json(run.summary(1, "json"), {"iteration": 1, "benchmark": bench, "benchmark_baseline": baseline})
    store.write_json(run.health(1), {"drift": {"passed": True, "failed": [], "metrics": {"gap": 1.5}}})
    assert tracking.iteration_metrics(run, 1) == {
        "benchmark.model_iteration": 1.0, "benchmark.mt_bench.score": 5.0, "benchmark_baseline.model_iteration": 0.0,
        "ifeval/prompt_level_strict_acc": 5 / 12, "ifeval/prompt_level_strict_acc_lo": 0.25,
        "ifeval/prompt_level_strict_acc_hi": 0.5833, "ifeval/n_prompts": 12.0,
        "llmbar/accuracy": 0.625, "llmbar/accuracy_lo": 0.25, "llmbar/accuracy_hi": 0.875, "llmbar/agreement": 0.75,
        "llmbar/n": 8.0, "llmbar/Adversarial Neighbor/accuracy": 0.5, "llmbar/Adversarial Neighbor/n": 4.0,
        "drift/gap": 1.5, "drift/self_preference": 0.75, "drift/ref_preference": 0.25,
        "drift/self_preference_excess": 0.5, "health.drift.passed": 1.0}
    assert tracking.baseline_metrics(run, 1) == {"ifeval/prompt_level_strict_acc": 0.25}
    store.write_json(run.summary(2, "json"), {"iteration": 2, "benchmark": bench, "benchmark_baseline": baseline})
    assert tracking.baseline_metrics(run, 2) == {}  # M_0 goes to step 0 once, with iteration 1
