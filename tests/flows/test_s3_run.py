"""`metareward run smoke storage.root=s3://...` from the CLI against a real S3 API (moto's server): every stage's
data and manifest, the trained model and Prefect's cache records land in the bucket; a rerun is all cache hits."""

import json
import re

import fsspec
import pytest
from typer.testing import CliRunner

from metareward.runstore import store
from metareward.records import Response

STAGES = ["prompts", "generate", "judge", "meta_judge", "pairs", "train", "answers", "benchmark"]


def _task_runs():
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_task_runs(limit=200)


@pytest.mark.slow
def test_cli_run_on_s3(s3_bucket, prefect_harness, fake_trainer, tmp_path, s3_server):
    from flows.cli import app
    from metareward.engines.models import EMBEDDED_NAME, embedded_model_path

    (tmp_path / "cache").mkdir()  # the converted embedded model, shared (not converted again: about 30 s)
    (tmp_path / "cache" / EMBEDDED_NAME).symlink_to(embedded_model_path())
    root = f"{s3_bucket}/runs"
    args = ["run", "smoke", f"storage.root={root}", "engine.backend=fake", "execution.stage_process=inline", "run.name=s3", "run.iterations=2",
            "pairs.judge_pairs=[true, false]", f"storage.model_cache={tmp_path / 'cache'}"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    run = f"{root}/s3"
    fs = fsspec.filesystem("s3")
    for t, stage in [(1, s) for s in STAGES] + [(2, s) for s in STAGES if s != "meta_judge"] + [(0, "answers"), (0, "benchmark")]:
        assert fs.exists(f"{run}/iter_{t}/{stage}/manifest.json"), (t, stage)
    assert len(store.read_jsonl(f"{run}/iter_1/generate/responses.jsonl", Response)) == 16 * 4
    # M_1 was trained locally and pushed; iteration 2 trained from M_1 pulled back into the model cache
    m1 = json.loads(fs.cat(f"{run}/iter_1/train/model/config.json"))
    assert m1["pairs"] == store.read_manifest(f"{run}/iter_1/pairs").counts["pairs"]
    train1 = store.read_manifest(f"{run}/iter_1/train")
    assert train1.digests["model"] == store.folder_digest(f"{run}/iter_1/train/model")
    assert fake_trainer[1][1] == str(tmp_path / "cache" / "store" / train1.digest)
    # M_0 entered the store once, named by its content digest; iteration 1 trained from its pulled copy
    m0 = store.read_json(f"{run}/iter_0/seed_model.json")["model"]
    assert m0["uri"] == f"models/{m0['digest']}" and fs.exists(f"{root}/{m0['uri']}.complete")  # relative to the root
    assert fake_trainer[0][1] == str(tmp_path / "cache" / "store" / m0["digest"])
    assert fs.find(f"{run}/.prefect-results")  # Prefect's cache records are in the same store
    # no credential in the run's config or manifests
    texts = [fs.cat(p).decode() for p in fs.find(run) if p.endswith(".json")]
    assert texts and not any(s3_server["secret"] in t or s3_server["key"] in t for t in texts)

    # a second invocation recomputes nothing and trains nothing
    before = {p: fs.info(p)["LastModified"] for p in fs.find(run) if p.endswith("manifest.json")}
    fs.invalidate_cache()
    seen = {r.id for r in _task_runs()}
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert len(fake_trainer) == 2
    assert {p: fs.info(p)["LastModified"] for p in fs.find(run) if p.endswith("manifest.json")} == before
    states = {r.name: r.state.name for r in _task_runs() if r.id not in seen and re.fullmatch(r"[a-z_]+-iter\d", r.name)
              and not r.name.startswith("report-")}  # the report is rewritten on every invocation, by design
    assert len(states) == 8 + 2 + 7 and set(states.values()) == {"Cached"}, states  # Prefect's cache, on the S3 store
