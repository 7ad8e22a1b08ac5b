"""The compose stack (docker/compose.yaml + compose.offline.yaml, which replaces MinIO's image, not to be had without
a registry, by the local S3 stand-in) comes up with docker-compose, and one smoke run triggered from the CLI
(`prefect deployment run --watch`) finishes through it, each model stage in a container the stack's docker worker
started (Docker's record). The stack listens on the host's 127.0.0.1:4200 (Prefect) and :9000 (S3)."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from docker_record import IMAGE, DockerRecord, aws_folder, flow_run_name
from servers import REPO, SMALLEST, api, wait_until

pytestmark = pytest.mark.slow

API = "http://127.0.0.1:4200/api"
FILES = ["-f", "docker/compose.yaml", "-f", "docker/compose.offline.yaml"]
RUN = "cmp"


@pytest.fixture(scope="module")
def compose(tmp_path_factory, request):
    tmp = tmp_path_factory.mktemp("compose")
    key, secret = "metareward-compose", "s3cr3t-" + secrets.token_hex(16)
    aws = aws_folder(key, secret, "http://127.0.0.1:9000")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PREFECT_"))}
    env.update({"MINIO_ROOT_USER": key, "MINIO_ROOT_PASSWORD": secret, "METAREWARD_AWS_DIR": str(aws),
                "PREFECT_HOME": str(tmp / "prefect-home"), "PREFECT_API_URL": API})
    project = ["docker-compose", "-p", "metareward-test-" + secrets.token_hex(3), *FILES]

    def down():
        subprocess.run([*project, "down", "-v"], cwd=REPO, env=env, capture_output=True, timeout=300)
        shutil.rmtree(aws, ignore_errors=True)

    request.addfinalizer(down)
    record = DockerRecord(tmp / "docker-events.log")
    request.addfinalizer(record.stop)
    up = subprocess.run([*project, "up", "-d"], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
    # up -d returns once the workers are created; their pools and deployments came from the one-shot deploy service
    wait_until(lambda: api("GET", f"{API}/deployments/name/meta-rewarding-recipe/smoke-docker").status_code == 200,
               "the deploy service's deployments", 300, every=2)
    return {"env": env, "project": project, "record": record, "secret": secret, "tmp": tmp}


def test_a_smoke_run_triggered_from_the_cli_finishes_through_the_stack(compose):
    overrides = [f"run.name={RUN}", "storage.root=s3://metareward/runs", "execution.mode=deployments",
                 "execution.stage_deployment=docker-cpu", *SMALLEST]
    out = subprocess.run([str(Path(sys.executable).parent / "prefect"), "deployment", "run", "--watch",
                          "meta-rewarding-recipe/smoke-docker", "--param", f"overrides={json.dumps(overrides)}"],
                         cwd=REPO, env=compose["env"], capture_output=True, text=True, timeout=1500)
    logs = subprocess.run([*compose["project"], "logs", "--tail", "60"], cwd=REPO, env=compose["env"],
                          capture_output=True, text=True).stdout
    assert out.returncode == 0 and "Completed" in out.stdout, out.stdout[-3000:] + out.stderr[-2000:] + logs[-6000:]
    flows = api("POST", f"{API}/flow_runs/filter", json={"limit": 200}).json()
    done = {f["name"] for f in flows if f["state"]["type"] == "COMPLETED"}
    stages = {f"{RUN}-{s}-iter1" for s in ("generate", "judge", "meta_judge", "train", "answers", "benchmark")}
    assert stages | {f"{RUN}-answers-iter0", f"{RUN}-benchmark-iter0"} <= done
    starts = compose["record"].starts()
    assert {flow_run_name(e) for e in starts if e["Actor"]["Attributes"].get("io.prefect.work-pool-name")} \
        == stages | {f"{RUN}-answers-iter0", f"{RUN}-benchmark-iter0"}
    assert {e["Actor"]["Attributes"]["image"] for e in starts if flow_run_name(e) in stages} == {IMAGE}
    assert compose["secret"] not in logs
