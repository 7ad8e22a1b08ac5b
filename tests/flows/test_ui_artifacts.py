"""What the Prefect UI gets from one fake-engine iteration: run names, tags, artifacts, and the report in the store."""

from pathlib import Path

from metareward.reporting import report
from metareward.runstore import store
from metareward.config import load_config
from metareward.records import Judgment
from metareward.runstore.layout import RunLayout


def test_iteration_publishes_report_and_artifacts(tmp_path, prefect_harness, fake_trainer):
    from prefect import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey, FlowRunFilter, FlowRunFilterName

    from flows.run import run_pipeline

    cfg = load_config("smoke", [f"storage.root={tmp_path}", "engine.backend=fake", "execution.stage_process=inline", "run.name=UI_Run.1"])
    run_pipeline(cfg, recipe="smoke")
    run = Path(RunLayout(str(tmp_path), "UI_Run.1").run)
    html = (run / "report" / "report.html").read_text()
    assert html.count("data:image/png;base64,") == 7  # judge_free.png and drift.png among them

    judgments = store.read_jsonl(str(run / "iter_1/judge/judgments.jsonl"), Judgment)
    parse_rate = sum(j.score is not None for j in judgments) / len(judgments)
    with get_client(sync_client=True) as client:
        [md] = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["ui-run-1-iter1"])))
        assert md.type == "markdown" and md.data.startswith("# UI_Run.1: iteration 1")
        assert f"| parse rate | {round(parse_rate, 4)} |" in md.data
        assert str(run / "report" / "report.html") in md.data  # link to the store
        tables = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(like_="ui-run-1-iter1-")))
        keys = {a.key for a in tables}
        assert {"ui-run-1-iter1-judge-health", "ui-run-1-iter1-meta-judge", "ui-run-1-iter1-benchmark",
                "ui-run-1-iter1-llmbar-per-set", "ui-run-1-iter1-drift"} <= keys
        # the smoke recipe's IFEval and LLMBar beside the judged benchmarks, each with its interval and n
        [bench] = [a for a in tables if a.key == "ui-run-1-iter1-benchmark"]
        assert "IFEval prompt-level strict" in bench.data and "none (checked by code)" in bench.data
        assert "LLMBar accuracy, pooled" in md.data and "(n=8)" in md.data and "### Iteration 1: drift" in md.data
        progress = [a for a in tables if a.type == "progress"]
        assert {a.key for a in progress} >= {"ui-run-1-iter1-generate-generate-progress",
                                             "ui-run-1-iter1-judge-score-progress"}
        assert all(a.data == 100.0 for a in progress)
        [flow_run] = client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=["UI_Run.1-iter1"])))
        assert {"run:UI_Run.1", "recipe:smoke"} <= set(flow_run.tags)
        task_runs = {tr.name: tr for tr in client.read_task_runs(flow_run_filter=FlowRunFilter(
            name=FlowRunFilterName(any_=["UI_Run.1-iter1"])))}
        assert "gpu" in task_runs["judge-iter1"].tags and "cpu" in task_runs["pairs-iter1"].tags
        assert "recipe:smoke" in task_runs["judge-iter1"].tags and "train-iter1" in task_runs
        assert set(task_runs) == {f"{s}-iter1" for s in ("prompts", "generate", "judge", "meta_judge", "pairs",
                                                          "train")}  # the iteration is its six stages
        # ... then the report, a flow run of its own: M_1's and M_0's answers and benchmark, the summary, the report
        report_runs = {tr.name for tr in client.read_task_runs(flow_run_filter=FlowRunFilter(
            name=FlowRunFilterName(any_=["UI_Run.1-iter1-report"])))}
        assert report_runs == {"answers-iter1", "benchmark-iter1", "answers-iter0", "benchmark-iter0", "report-iter1"}
    rep = report.load_run(str(run))
    assert rep.iterations[1].manifests["judge"].counts["judgments"] == len(judgments)
