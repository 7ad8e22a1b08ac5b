"""Real servers for the tests that need them (tests/integration, tests/docker): a Stack of processes started with
their own PREFECT_HOME, logs in files, stopped by PID (process group) in a finalizer, and REST calls retried as
Prefect's own client retries them."""

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

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

# The smoke recipe cut to its smallest sizes (the real SmolLM2; seconds per stage): what the server tests run.
SMALLEST = ["execution.retry_delay_seconds=1", "prompts.per_iteration=3", "prompts.eval_count=1", "actor.k=3",
            "judge.n=2", "actor.sampling.max_new_tokens=8", "judge.sampling.max_new_tokens=4", "eval.max_new_tokens=4",
            "eval.mt_bench.enabled=false", "eval.alpaca_eval.enabled=false", "eval.ifeval.limit=2",
            "eval.ifeval.max_new_tokens=4", "eval.llmbar.limit=1", "dpo.max_steps=1",
            "dpo.per_device_batch_size=1", "dpo.global_batch_size=1", "dpo.max_length=512"]


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

    def start(self, name: str, args: list[str], extra_env: dict | None = None,
              replace_env: dict | None = None) -> subprocess.Popen:
        """A server in the background: the stack's environment plus ``extra_env``, or ``replace_env`` alone."""
        log = self.tmp / f"{name}.log"
        self.logs.append(log)
        env = replace_env if replace_env is not None else {**self.env, **(extra_env or {})}
        proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=log.open("wb"),
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

    def start_store_and_api(self) -> None:
        """moto_server (an S3 API) and `prefect server start` on free ports of 127.0.0.1, both answering on return;
        the stack's environment points s3fs and Prefect at them (``self.endpoint``, ``self.api``)."""
        s3_port, api_port = free_port(), free_port()
        self.start("moto", [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(s3_port)])
        self.env["AWS_ENDPOINT_URL"] = self.endpoint = f"http://127.0.0.1:{s3_port}"
        self.start("prefect-server", [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1",
                                      "--port", str(api_port)])
        self.env["PREFECT_API_URL"] = self.api = f"http://127.0.0.1:{api_port}/api"
        wait_until(lambda: httpx.get(self.endpoint).status_code < 500, "moto_server", 60)
        wait_until(lambda: httpx.get(f"{self.api}/health").status_code == 200, "prefect server", 120)

    def deploy_all(self) -> None:
        """Every work pool deployments/prefect.yaml names (docker where its job variables name an image, else
        process), then `prefect deploy --all` of that file: a pool added there needs nothing added here."""
        import yaml

        doc = yaml.safe_load((REPO / "deployments/prefect.yaml").read_text())
        for pool in doc["definitions"]["pools"].values():
            kind = "docker" if "image" in pool["job_variables"] else "process"
            self.prefect("work-pool", "create", pool["name"], "--type", kind)
        self.prefect("deploy", "--all", "--prefect-file", "deployments/prefect.yaml")

    def wait_flow_run(self, run_id: str, timeout: float, logs: tuple[str, ...] = ("worker.log",)) -> dict:
        """The flow run once it ends; a test failure with the named logs' tails unless it Completed."""
        def done():
            run = api("GET", f"{self.api}/flow_runs/{run_id}").json()
            return run if run["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") else None

        run = wait_until(done, f"flow run {run_id}", timeout, every=2)
        if run["state"]["type"] != "COMPLETED":
            import pytest

            tails = "\n".join(f"--- {name}\n{(self.tmp / name).read_text(errors='replace')[-4000:]}" for name in logs)
            pytest.fail(f"flow run ended {run['state']['name']}: {run['state'].get('message')}\n{tails}")
        return run

    def load_model_in_fresh_process(self, uri: str, cache: Path) -> tuple[str, int]:
        """A model folder of the store pulled into ``cache`` (as "m1") and loaded by transformers, in a new Python
        process with the stack's environment: (local path, parameter count)."""
        code = ("import sys; from metareward.runstore.remote import local_model; "
                "from transformers import AutoModelForCausalLM; p = local_model(sys.argv[1], 'm1', sys.argv[2]); "
                "print(p, AutoModelForCausalLM.from_pretrained(p).num_parameters())")
        out = subprocess.run([sys.executable, "-c", code, uri, str(cache)], env=self.env, capture_output=True,
                             text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-3000:]
        path, n_params = out.stdout.split()[-2:]
        return path, int(n_params)

    def stop(self) -> None:
        for proc in reversed(self.procs):  # by PID: the process group each one leads (worker flow runs included)
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=10)


class SilentServer:
    """A TCP server on 127.0.0.1 that accepts every connection and never answers (a hung store endpoint);
    ``accepted`` counts the connections it holds."""

    def __init__(self):
        import threading

        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def accepted(self) -> int:
        return len(self.held)

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:  # closed
                return
            self.held.append(conn)

    def close(self) -> None:
        self.sock.close()
        for conn in self.held:
            conn.close()


class FaultProxy:
    """A TCP proxy on 127.0.0.1 to a server on ``target_port`` whose fault can be switched at any moment (``mode``),
    for new connections and for those already open (a client keeps its connections alive):

    - ``pass``: bytes go both ways;
    - ``refuse``: a connection is closed as soon as it is accepted (open ones are closed);
    - ``reset``: a connection is reset (RST) at once;
    - ``drop``: ``drop_after`` bytes of the server's reply go through, then both sides are closed (mid-transfer);
    - ``stall``: nothing goes through any more; the connection stays open and silent until the client gives up.

    ``connections`` counts the accepted connections, ``faults`` the connections a fault hit."""

    MODES = ("pass", "refuse", "reset", "drop", "stall")

    def __init__(self, target_port: int, mode: str = "pass", drop_after: int = 64):
        import threading

        self.target, self.drop_after, self.mode = ("127.0.0.1", target_port), drop_after, mode
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.connections, self.faults, self.closed = 0, 0, threading.Event()
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def set(self, mode: str) -> None:
        assert mode in self.MODES, mode
        self.mode = mode

    def _accept(self) -> None:
        import threading

        while not self.closed.is_set():
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            with self._lock:
                self.connections += 1
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _fault(self, client: socket.socket, upstream: socket.socket | None) -> None:
        """Apply the current fault to a connection (not "pass" nor "drop")."""
        with self._lock:
            self.faults += 1
        if self.mode == "stall":
            self.closed.wait()  # silent until the proxy goes away or the client closes
        elif self.mode == "reset":
            import struct

            client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        for s in (client, upstream):
            if s is not None:
                s.close()

    def _serve(self, client: socket.socket) -> None:
        import threading

        if self.mode not in ("pass", "drop"):
            return self._fault(client, None)
        try:
            upstream = socket.create_connection(self.target, timeout=10)
        except OSError:
            client.close()
            return
        upstream.settimeout(None)
        done = threading.Event()
        threading.Thread(target=self._pump, args=(client, upstream, False, done), daemon=True).start()
        self._pump(upstream, client, True, done)

    def _pump(self, src: socket.socket, dst: socket.socket, reply: bool, done) -> None:
        """Copy ``src`` to ``dst`` while the mode lets it; ``reply``: the server's side, which "drop" cuts."""
        sent = 0
        try:
            while not done.is_set():
                data = src.recv(65536)
                if not data:
                    break
                mode = self.mode
                if mode == "drop" and reply:
                    dst.sendall(data[: max(0, self.drop_after - sent)])
                    with self._lock:
                        self.faults += 1
                    break
                if mode not in ("pass", "drop"):
                    done.set()
                    return self._fault(dst if reply else src, src if reply else dst)
                dst.sendall(data)
                sent += len(data)
        except OSError:
            pass
        done.set()
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def close(self) -> None:
        self.closed.set()
        self.sock.close()
