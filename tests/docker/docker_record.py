"""Docker's own record of the containers started during a test: `docker events` read in a thread, and each started
container's `docker inspect`, taken at once (stage containers are auto-removed when they exit)."""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import threading
from pathlib import Path

IMAGE = "metareward:cpu"
IMAGE_UID = 1000  # the image's non-root user (docker/Dockerfile.cpu)


def aws_folder(key: str, secret: str, endpoint: str) -> Path:
    """S3 keys and endpoint as the folder a container mounts read-only as its ~/.aws: outside the tests' 0700
    temporary folders, owned by the image's user and readable by it alone (docs/cluster.md's /etc/metareward/aws)."""
    folder = Path(tempfile.mkdtemp(prefix="metareward-aws-"))
    (folder / "credentials").write_text(f"[default]\naws_access_key_id = {key}\naws_secret_access_key = {secret}\n")
    (folder / "config").write_text(f"[default]\nendpoint_url = {endpoint}\n")
    for path in (folder, folder / "credentials", folder / "config"):
        os.chown(path, IMAGE_UID, IMAGE_UID)
        path.chmod(0o700 if path.is_dir() else 0o600)
    return folder


class DockerRecord:
    """Docker's own account of the containers started while it runs: every start/die/kill event, and each started
    container's `docker inspect`, taken at once (stage containers are auto-removed when they exit)."""

    def __init__(self, log: Path):
        self.events, self.inspected, self.lock = [], {}, threading.Lock()
        self.proc = subprocess.Popen(
            ["docker", "events", "--filter", "type=container", "--filter", "event=start", "--filter", "event=die",
             "--filter", "event=kill", "--format", "{{json .}}"], stdout=subprocess.PIPE, text=True)
        self.log = log.open("w")
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.log.write(line)
            self.log.flush()
            event = json.loads(line)
            if event.get("Action") == "start":
                out = subprocess.run(["docker", "inspect", event["id"]], capture_output=True, text=True)
                if out.returncode == 0:
                    with self.lock:
                        self.inspected[event["id"]] = out.stdout
            with self.lock:
                self.events.append(event)

    def starts(self, since: int = 0) -> list[dict]:
        """Container start events (from the `since`-th event on), each with the container's labels and image."""
        with self.lock:
            return [e for e in self.events[since:] if e.get("Action") == "start"]

    def mark(self) -> int:
        with self.lock:
            return len(self.events)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)
        self.log.close()


def flow_run_name(event: dict) -> str:
    """The Prefect flow run a container ran, from the labels the docker worker puts on it."""
    attrs = event["Actor"]["Attributes"]
    return attrs.get("io.prefect.flow-run-name", attrs.get("name", ""))
