"""Acceptance: the Prefect UI shows an iteration's report.

A real `prefect server start` on 127.0.0.1 (own PREFECT_HOME), `metareward run smoke` on the fake engine against
it (PREFECT_API_URL), then headless Chromium (Debian's, driven by playwright) opens the iteration's report flow run,
its Artifacts tab and the markdown artifact: the report's tables are on the page. Screenshots are saved in the
test's tmp folder (printed at the end; pytest keeps the last few runs' folders).

Chromium comes from apt-get, installed by the `chromium` fixture when missing (idempotent); without apt-get
(or without Chromium) the test is skipped with the reason.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="session")
def chromium() -> Path:
    """Debian's chromium, installed with apt-get when it is not there yet."""
    if CHROMIUM.exists():
        return CHROMIUM
    if shutil.which("apt-get") is None:
        pytest.skip("needs Debian's chromium: not installed and apt-get is unavailable")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    lock = ["-o", "DPkg::Lock::Timeout=600"]
    subprocess.run(["apt-get", *lock, "update", "-qq"], check=True, env=env, capture_output=True)
    subprocess.run(["apt-get", *lock, "install", "-y", "-qq", "chromium"], check=True, env=env, capture_output=True)
    assert CHROMIUM.exists(), "apt-get install chromium did not provide /usr/bin/chromium"
    return CHROMIUM


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(home: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(home), DO_NOT_TRACK="1", PREFECT_SERVER_ANALYTICS_ENABLED="false",
               HF_HUB_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1", **extra)
    return env


@pytest.fixture
def prefect_server(tmp_path):
    """`prefect server start` on a free port; yields the base URL; stopped by its process group at the end."""
    port = _free_port()
    log = open(tmp_path / "prefect-server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port",
                             str(port)], env=_env(tmp_path / "server-home", PREFECT_SERVER_UI_API_URL=f"http://127.0.0.1:{port}/api"), stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/api/health", timeout=2) as r:
                    if json.load(r) is True:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"prefect server did not come up: {(tmp_path / 'prefect-server.log').read_text()}")
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


@pytest.mark.slow
def test_iteration_markdown_artifact_is_visible_in_the_ui(tmp_path, chromium, prefect_server):
    from playwright.sync_api import expect, sync_playwright

    api = f"{prefect_server}/api"
    env = _env(tmp_path / "client-home", PREFECT_API_URL=api)
    # The smoke recipe with the fake engine (canned actor/judge/meta-judge text) and real DPO on the embedded model
    cmd = [sys.executable, "-m", "flows", "run", "smoke", f"storage.root={tmp_path / 'runs'}", "run.name=ui",
           "engine.backend=fake", "dpo.max_steps=1", "dpo.global_batch_size=2", "--no-progress"]
    start = time.monotonic()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    print(f"pipeline: {time.monotonic() - start:.1f} s")
    assert p.returncode == 0, p.stderr[-3000:]

    query = json.dumps({"flow_runs": {"name": {"any_": ["ui-iter1-report"]}}}).encode()  # iteration 1's report
    req = urllib.request.Request(f"{api}/flow_runs/filter", data=query, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        [flow_run] = json.load(r)
    assert flow_run["state_type"] == "COMPLETED"
    n_judgments = len((tmp_path / "runs/ui/iter_1/judge/judgments.jsonl").read_text().splitlines())

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(chromium), headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{prefect_server}/runs/flow-run/{flow_run['id']}", wait_until="networkidle")
        tabs = page.get_by_role("tablist")
        expect(tabs).to_be_visible(timeout=30_000)
        tabs.get_by_text("Artifacts", exact=True).click()
        card = page.get_by_role("link", name="markdown ui-iter1")  # the iteration's markdown artifact
        expect(card).to_be_visible(timeout=30_000)
        page.screenshot(path=str(tmp_path / "flow-run-artifacts.png"), full_page=True)
        card.click()
        expect(page.get_by_role("heading", name="ui: iteration 1")).to_be_visible(timeout=30_000)
        health = page.get_by_role("table").filter(has=page.get_by_role("cell", name="parse rate", exact=True))
        expect(health.get_by_role("row", name=f"judgments {n_judgments}", exact=True)).to_be_visible()
        expect(page.get_by_role("heading", name="Iteration 1: meta-judge")).to_be_visible()
        page.screenshot(path=str(tmp_path / "iteration-artifact.png"), full_page=True)
        browser.close()
    for shot in ("flow-run-artifacts.png", "iteration-artifact.png"):
        assert (tmp_path / shot).read_bytes().startswith(b"\x89PNG")
    print(f"screenshots: {tmp_path}")
