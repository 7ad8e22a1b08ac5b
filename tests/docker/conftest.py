"""The docker work pool for real (make test-docker): moto_server (S3 API) and `prefect server start` on 127.0.0.1, a
process worker of the `local` pool (the orchestrating flow), a docker worker of the `docker-cpu` pool (prefect-docker)
that starts every model stage in its own metareward:cpu container, and Docker's own record of the containers it
ran (`docker events`, each started container's `docker inspect`).

Opt-in: METAREWARD_TEST_DOCKER=1 (set by `make test-docker`, which also starts the engine and builds the image).
Stage containers use the host's network; their S3 keys and endpoint come from a folder mounted read-only as their
~/.aws (METAREWARD_AWS_DIR at deploy time), never from an environment variable, a job variable or a parameter.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from docker_record import IMAGE, DockerRecord, aws_folder
from servers import BIN, Stack

MODEL_VOLUME = "metareward-models"  # the docker pools' model cache (deployments/prefect.yaml)


def _docker_ready() -> str | None:
    """Why the docker tests cannot run here, or None."""
    if os.environ.get("METAREWARD_TEST_DOCKER") != "1":
        return "docker tests are opt-in: make test-docker (METAREWARD_TEST_DOCKER=1)"
    if shutil.which("docker") is None:
        return "no docker client"
    if subprocess.run(["docker", "info"], capture_output=True).returncode != 0:
        return "no Docker daemon answers (docker/engine.sh starts one)"
    if subprocess.run(["docker", "image", "inspect", IMAGE], capture_output=True).returncode != 0:
        return f"no {IMAGE} image (make images-offline)"
    return None


def pytest_collection_modifyitems(config, items):
    why = _docker_ready()
    if why:
        for item in items:
            if "docker" in item.path.parts:
                item.add_marker(pytest.mark.skip(reason=why))


@pytest.fixture(scope="module")
def docker_stack(tmp_path_factory, request):
    """moto_server + prefect server + the pools and deployments + a process worker and a docker worker, and Docker's
    record of containers; all stopped at the end (stage containers are removed by Docker as they exit)."""
    from metareward.engines.models import EMBEDDED_NAME, embedded_model_path

    # the host's model volume starts empty, so what the test finds in it was put there by this run's containers
    subprocess.run(["docker", "volume", "rm", "-f", MODEL_VOLUME], capture_output=True)
    tmp = tmp_path_factory.mktemp("docker-stack")
    s = Stack(tmp)
    request.addfinalizer(s.stop)
    (tmp / "cache" / "models").mkdir(parents=True)  # the orchestrator's M_0: the converted embedded model, linked
    (tmp / "cache" / "models" / EMBEDDED_NAME).symlink_to(embedded_model_path())

    s.start_store_and_api()

    s.bucket = "metareward-docker"
    import fsspec

    s.fs = fsspec.filesystem("s3", key=s.env["AWS_ACCESS_KEY_ID"], secret=s.secret, endpoint_url=s.endpoint,
                             skip_instance_cache=True)
    s.fs.mkdir(s.bucket)
    s.aws_dir = aws_folder(s.env["AWS_ACCESS_KEY_ID"], s.secret, s.endpoint)
    request.addfinalizer(lambda: shutil.rmtree(s.aws_dir, ignore_errors=True))
    s.env["METAREWARD_AWS_DIR"] = str(s.aws_dir)  # resolved into the pools' volume list at deploy time
    s.deploy_all()

    s.docker = DockerRecord(tmp / "docker-events.log")
    request.addfinalizer(s.docker.stop)
    s.logs.append(tmp / "docker-events.log")
    s.start("worker", [str(BIN / "prefect"), "worker", "start", "--pool", "local", "--type", "process"])
    # the docker worker's host has no S3 keys in its environment: stage containers get them from the mounted folder
    no_keys = {k: v for k, v in s.env.items() if not k.startswith("AWS_")}
    s.start("docker-worker", [str(BIN / "prefect"), "worker", "start", "--pool", "docker-cpu", "--type", "docker"],
            replace_env=no_keys)
    return s
