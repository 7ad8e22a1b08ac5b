"""Real servers for the integration tests: moto_server (S3 API), `prefect server start`, a `prefect worker`.

Every process is started here with its own PREFECT_HOME and stopped by its PID in a finalizer, also when a test
fails. Logs go to files under the test's temporary folder (the secret-grep test reads them).
"""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent

# A transient failure injected into the worker's processes: the first call of the named stage function raises,
# the next one runs (the marker file remembers). Loaded through PYTHONPATH as sitecustomize, only in the worker.
SITECUSTOMIZE = '''
import os
_spec = os.environ.get("METAREWARD_TEST_FAIL_ONCE")
if _spec:
    import metareward.stages as _stages
    _stage, _marker = _spec.split(":", 1)
    _orig = getattr(_stages, _stage)

    def _fail_once(*args, **kwargs):
        if not os.path.exists(_marker):
            with open(_marker, "w") as f:
                f.write(str(os.getpid()))
            raise ConnectionError(f"injected transient error in {_stage}")
        return _orig(*args, **kwargs)

    setattr(_stages, _stage, _fail_once)
'''


# What Prefect's own client retries: the server answers 503 for errors a client can retry (e.g. its SQLite
# database locked while the machine is busy: seen once under the parallel test workers), 429 and 502 likewise.
RETRYABLE = {429, 502, 503}


def api(method: str, url: str, **kwargs) -> httpx.Response:
    """An HTTP call to a test server, retried as Prefect's client retries; raises on any other error status."""
    for attempt in range(8):
        r = httpx.request(method, url, timeout=60, **kwargs)
        if r.status_code not in RETRYABLE:
            break
        time.sleep(min(0.5 * 2 ** attempt, 8))
    r.raise_for_status()
    return r


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(check, what: str, timeout: float, every: float = 0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            got = check()
            if got:
                return got
        except (httpx.HTTPError, OSError):
            pass
        time.sleep(every)
    raise TimeoutError(f"{what}: not ready after {timeout:.0f} s")


class Stack:
    """The running servers, their environment and logs."""

    wait_until = staticmethod(wait_until)
    call = staticmethod(api)

    def __init__(self, tmp: Path):
        self.tmp, self.procs, self.logs = tmp, [], []
        self.secret = "s3cr3t-" + secrets.token_hex(16)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PREFECT_"))}
        self.env.update({
            "PREFECT_HOME": str(tmp / "prefect-home"), "DO_NOT_TRACK": "1", "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "AWS_ACCESS_KEY_ID": "metareward-it", "AWS_SECRET_ACCESS_KEY": self.secret,
            "METAREWARD_HOME": str(REPO), "METAREWARD_CACHE": str(tmp / "cache"),
            "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1", "TOKENIZERS_PARALLELISM": "false",
            "PREFECT_LOGGING_EXTRA_LOGGERS": "metareward", "PREFECT_WORKER_QUERY_SECONDS": "1",
            "PREFECT_WORKER_PREFETCH_SECONDS": "1",
        })

    def start(self, name: str, args: list[str], extra_env: dict | None = None) -> subprocess.Popen:
        log = self.tmp / f"{name}.log"
        self.logs.append(log)
        proc = subprocess.Popen(args, cwd=REPO, env={**self.env, **(extra_env or {})}, stdout=log.open("wb"),
                                stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(proc)
        return proc

    def prefect(self, *args: str, timeout: float = 180) -> str:
        out = subprocess.run([str(BIN / "prefect"), "--no-prompt", *args], cwd=REPO, env=self.env, timeout=timeout,
                             capture_output=True, text=True)
        log = self.tmp / "prefect-cli.log"
        with log.open("a") as f:
            f.write(f"$ prefect {' '.join(args)}\n{out.stdout}\n{out.stderr}\n")
        if log not in self.logs:
            self.logs.append(log)
        assert out.returncode == 0, f"prefect {' '.join(args)}: {out.stdout[-2000:]}{out.stderr[-2000:]}"
        return out.stdout

    def stop(self) -> None:
        for proc in reversed(self.procs):  # by PID: the process group each one leads (worker flow runs included)
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=10)


@pytest.fixture(scope="module")
def stack(tmp_path_factory, request):
    """moto_server + prefect server (+ pools, deployments, a worker) on 127.0.0.1; all stopped by PID at the end."""
    from metareward.models import EMBEDDED_NAME, embedded_model_path

    tmp = tmp_path_factory.mktemp("stack")
    s = Stack(tmp)
    request.addfinalizer(s.stop)
    (tmp / "cache" / "models").mkdir(parents=True)  # the converted embedded model, shared read-only (no 30 s conversion)
    (tmp / "cache" / "models" / EMBEDDED_NAME).symlink_to(embedded_model_path())

    s3_port, api_port = free_port(), free_port()
    s.start("moto", [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(s3_port)])
    s.env["AWS_ENDPOINT_URL"] = s.endpoint = f"http://127.0.0.1:{s3_port}"
    s.start("prefect-server", [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(api_port)])
    s.env["PREFECT_API_URL"] = s.api = f"http://127.0.0.1:{api_port}/api"
    wait_until(lambda: httpx.get(s.endpoint).status_code < 500, "moto_server", 60)
    wait_until(lambda: httpx.get(f"{s.api}/health").status_code == 200, "prefect server", 120)

    s.bucket = "metareward-it"
    import fsspec

    s.fs = fsspec.filesystem("s3", key="metareward-it", secret=s.secret, endpoint_url=s.endpoint,
                             skip_instance_cache=True)
    s.fs.mkdir(s.bucket)
    s.prefect("work-pool", "create", "local", "--type", "process")
    s.prefect("work-pool", "create", "gpu", "--type", "docker")
    s.prefect("deploy", "--all", "--prefect-file", "deployments/prefect.yaml")

    inject = tmp / "inject"
    inject.mkdir()
    (inject / "sitecustomize.py").write_text(SITECUSTOMIZE)
    s.fail_marker = tmp / "judge-failed-once"
    s.start("worker", [str(BIN / "prefect"), "worker", "start", "--pool", "local", "--type", "process"],
            {"PYTHONPATH": str(inject), "METAREWARD_TEST_FAIL_ONCE": f"judge:{s.fail_marker}"})
    return s
