"""The acceptance run of issue 3 on real components: moto_server (S3 API), `prefect server start`, a process work
pool and `prefect worker`, the deployments of deployments/prefect.yaml. The smoke pipeline (the real SmolLM2,
cut to the smallest sizes) is triggered through the REST API with storage.root=s3://... and
execution.mode=deployments: every GPU stage runs as its own deployment, in a fresh process of the worker.

The worker's first `judge` call fails with an injected transient error (tests/integration/conftest.py); the task
retry makes the run complete anyway.
"""

from __future__ import annotations

import json
import time

import pytest
from servers import SMALLEST

pytestmark = pytest.mark.slow

GPU_STAGES = ["generate", "judge", "meta_judge", "train", "answers", "benchmark"]
STAGES = ["prompts", "generate", "judge", "meta_judge", "pairs", "train", "answers", "benchmark"]
SMALL = ["run.name=it", "execution.mode=deployments", "execution.stage_deployment=local", *SMALLEST]


def _trigger(stack) -> str:
    dep = stack.call("GET", f"{stack.api}/deployments/name/meta-rewarding-recipe/smoke").json()
    overrides = [f"storage.root=s3://{stack.bucket}/runs", *SMALL]
    r = stack.call("POST", f"{stack.api}/deployments/{dep['id']}/create_flow_run",
                   json={"parameters": {"recipe": "smoke", "overrides": overrides}})
    return r.json()["id"]


def _wait(stack, run_id: str, timeout: float = 900) -> dict:
    return stack.wait_flow_run(run_id, timeout)


def _task_runs(stack) -> list[dict]:
    rows, offset = [], 0
    while True:
        page = stack.call("POST", f"{stack.api}/task_runs/filter", json={"limit": 200, "offset": offset}).json()
        rows += page
        if len(page) < 200:
            return rows
        offset += 200


def _run_folder(stack) -> str:
    return f"{stack.bucket}/runs/it"


@pytest.fixture(scope="module")
def first_run(stack):
    start = time.monotonic()
    run = _wait(stack, _trigger(stack))
    run["_seconds"] = time.monotonic() - start
    print(f"first run: {run['_seconds']:.0f} s")
    return run


def test_run_completes_with_every_manifest_and_the_model_in_the_bucket(stack, first_run):
    fs, run = stack.fs, _run_folder(stack)
    for t, stage in [(1, s) for s in STAGES] + [(0, "answers"), (0, "benchmark")]:
        assert fs.exists(f"{run}/iter_{t}/{stage}/manifest.json"), (t, stage)
    model = f"{run}/iter_1/train/model"
    names = {p.rsplit("/", 1)[1] for p in fs.find(model)}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= names
    train = json.loads(fs.cat(f"{run}/iter_1/train/manifest.json"))
    assert train["files"]["model"] == "model" and train["counts"]["steps"] == 1  # relative to the stage folder
    assert fs.find(f"{run}/.prefect-results")
    # each GPU stage ran as its own deployment flow run (a fresh process of the worker)
    flows = stack.call("POST", f"{stack.api}/flow_runs/filter", json={"limit": 200}).json()
    names = {f["name"] for f in flows if f["state"]["type"] == "COMPLETED"}
    for stage in GPU_STAGES:
        assert f"it-{stage}-iter1" in names, stage
    assert {"it-answers-iter0", "it-benchmark-iter0"} <= names
    # ... each started by the orchestrator's task of that stage (tasks/launch.py), which merged it
    done = {t["name"] for t in _task_runs(stack) if t["state"]["type"] == "COMPLETED"}
    assert {f"{s}-iter1" for s in GPU_STAGES} <= done


def test_a_fresh_process_loads_m1_from_the_bucket(stack, first_run, tmp_path):
    model = f"s3://{_run_folder(stack)}/iter_1/train/model"
    path, n_params = stack.load_model_in_fresh_process(model, tmp_path / "fresh")
    assert path == str(tmp_path / "fresh" / "store" / "m1") and n_params > 100_000_000


def test_the_injected_transient_failure_was_retried(stack, first_run):
    assert stack.fail_marker.is_file()  # the failure did happen, in a worker process
    judge = [t for t in _task_runs(stack) if t["name"] == "judge-iter1" and t["state"]["type"] == "COMPLETED"]
    assert judge and judge[0]["run_count"] == 2
    logs = stack.call("POST", f"{stack.api}/logs/filter", json={"limit": 200, "sort": "TIMESTAMP_ASC"}).json()
    assert any("injected transient error in judge" in row["message"] for row in logs)


def test_no_secret_in_logs_manifests_or_parameters(stack, first_run):
    texts = [p.read_text(errors="replace") for p in stack.logs]
    offset = 0
    while True:
        page = stack.call("POST", f"{stack.api}/logs/filter", json={"limit": 200, "offset": offset}).json()
        texts += [row["message"] for row in page]
        offset += 200
        if len(page) < 200:
            break
    flows = stack.call("POST", f"{stack.api}/flow_runs/filter", json={}).json()
    texts += [json.dumps(f["parameters"]) for f in flows]
    texts += [json.dumps(b) for b in stack.call("POST", f"{stack.api}/block_documents/filter",
                                                json={"include_secrets": True}).json()]
    texts += [stack.fs.cat(p).decode(errors="replace") for p in stack.fs.find(_run_folder(stack))
              if p.endswith((".json", ".jsonl", ".md")) or "/.prefect-results/" in p]
    assert len(texts) > 50
    assert not [t for t in texts if stack.secret in t]


def test_retrigger_is_all_cache_hits(stack, first_run):
    fs, run = stack.fs, _run_folder(stack)
    manifests = sorted(p for p in fs.find(run) if p.endswith("manifest.json"))
    before = {p: fs.info(p)["LastModified"] for p in manifests}
    seen = {t["id"] for t in _task_runs(stack)}
    flows_before = {f["id"] for f in
                    stack.call("POST", f"{stack.api}/flow_runs/filter", json={"limit": 200}).json()}
    start = time.monotonic()
    run_id = _trigger(stack)
    _wait(stack, run_id)
    print(f"second run: {time.monotonic() - start:.0f} s")
    # every stage is Cached in the orchestrating flow, GPU stages in the task that would have started their
    # deployment runs (tasks/launch.py)
    wanted = {f"{s}-iter1" for s in STAGES} | {"answers-iter0", "benchmark-iter0"}
    new = [t for t in _task_runs(stack) if t["id"] not in seen]
    fs.invalidate_cache()
    assert {p: fs.info(p)["LastModified"] for p in manifests} == before  # nothing recomputed
    assert wanted <= {t["name"] for t in new}
    assert all(t["state"]["name"] == "Cached" for t in new if t["name"] in wanted), \
        {t["name"]: t["state"]["name"] for t in new}
    # ... so no stage deployment ran: the only new flow runs are the orchestrator's own (recipe, loop, iteration)
    flows = stack.call("POST", f"{stack.api}/flow_runs/filter", json={"limit": 200}).json()
    started = sorted(f["name"] for f in flows if f["id"] not in flows_before)
    assert not [n for n in started if any(n.startswith(f"it-{s}-iter") for s in GPU_STAGES)], started
