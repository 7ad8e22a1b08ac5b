"""The CPU image on its own: non-root, the embedded model inside, and `docker run metareward:cpu metareward run smoke`
finishing with no network at all (--network none: nothing is downloaded at run time)."""

from __future__ import annotations

import json
import subprocess

import pytest
from docker_record import IMAGE
from servers import SMALLEST

pytestmark = pytest.mark.slow


def _run(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", "run", "--rm", "--network", "none", *args], capture_output=True, text=True,
                          timeout=timeout)


def test_the_image_runs_as_its_own_user_with_the_model_inside():
    out = _run(IMAGE, "sh", "-c", "id -u; ls $METAREWARD_CACHE/models/smollm2-135m-instruct; "
               "python -c 'import prefect_docker, s3fs'")
    assert out.returncode == 0, out.stderr
    uid, *files = out.stdout.split()
    assert uid == "1000" and {"config.json", "model.safetensors", "tokenizer.json"} <= set(files)


def test_docker_run_smoke_finishes_offline():
    out = _run(IMAGE, "sh", "-c", " ".join(["metareward", "run", "smoke", "run.name=img", *SMALLEST])
               + " && cat runs/img/iter_1/train/manifest.json")
    assert out.returncode == 0, (out.stdout[-3000:], out.stderr[-3000:])
    train = json.loads(out.stdout[out.stdout.index('{\n'):])
    assert train["counts"]["steps"] == 1 and train["files"]["model"] == "model"
