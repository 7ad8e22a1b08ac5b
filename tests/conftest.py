"""Test-wide settings: no network, no telemetry, Prefect state in a temporary folder."""

import os
import tempfile

# Before anything imports prefect or huggingface_hub.
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="metareward-prefect-"))
for key, value in {
    "HF_HUB_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "TOKENIZERS_PARALLELISM": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",  # 20 s by default; start-up took 20.5 s on a slow host
}.items():
    os.environ[key] = value
# Under pytest-xdist (make test runs two workers on the 2-core machine) each worker computes on one thread: two
# workers of two OpenMP threads each would oversubscribe the cores. Subprocesses the tests start inherit it.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _store_bounds_restored():
    """A test whose run set small store bounds (`store.configure`) does not pass them on to the next test."""
    from metareward.runstore import store

    saved = store.bounds(), {k: os.environ.get(k) for k in (store.TIMEOUT_ENV, store.OUTAGE_ENV)}
    yield
    store._bounds = saved[0]
    for k, v in saved[1].items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def pytest_collection_modifyitems(config, items):
    """The longest tests first (the real-server integration test, then the other slow ones), so the parallel
    workers do not end with one long test running alone."""
    def rank(item) -> int:
        return 0 if "integration" in item.path.parts else 1 if item.get_closest_marker("slow") else 2

    items.sort(key=rank)  # stable: file order within each rank


@pytest.fixture(scope="session")
def s3_server():
    """A real S3 API (moto's server, in this process, on 127.0.0.1) and the AWS_* variables that point s3fs at it.
    Yields {"endpoint", "key", "secret"}; each test makes its own bucket."""
    import secrets

    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {"AWS_ACCESS_KEY_ID": "metareward-test", "AWS_SECRET_ACCESS_KEY": "s3cr3t-" + secrets.token_hex(12),
           "AWS_ENDPOINT_URL": f"http://{host}:{port}"}
    saved = {k: os.environ.get(k) for k in [*env, "AWS_DEFAULT_REGION", "AWS_REGION"]}
    os.environ.update(env)
    for k in ("AWS_DEFAULT_REGION", "AWS_REGION"):  # moto refuses a location constraint on bucket creation
        os.environ.pop(k, None)
    try:
        yield {"endpoint": env["AWS_ENDPOINT_URL"], "key": env["AWS_ACCESS_KEY_ID"],
               "secret": env["AWS_SECRET_ACCESS_KEY"]}
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture
def s3_bucket(s3_server, request):
    """A fresh bucket on the moto server; yields its s3:// URI."""
    import re
    import uuid

    import fsspec

    fsspec.filesystem("s3").clear_instance_cache()
    name = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:40].strip("-") + "-" + uuid.uuid4().hex[:8]
    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    fs.mkdir(name)
    return f"s3://{name}"
