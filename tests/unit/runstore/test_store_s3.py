"""The run store on S3 through a real S3 API server (moto) that goes away: a stage whose server stops mid-way
retries and completes once the server is back; with the server gone for good the error names the URI."""

from __future__ import annotations

import sys
import threading
import uuid

import pytest

pytest.importorskip("s3fs")
moto_server = pytest.importorskip("moto.server")

from metareward.pipeline import stages  # noqa: E402
from metareward.runstore import store  # noqa: E402
from metareward.config import load_config  # noqa: E402
from metareward.engines.fake import FakeEngine  # noqa: E402
from metareward.records import ModelRef  # noqa: E402
from metareward.runstore.layout import RunLayout  # noqa: E402


class Server:
    """moto's threaded S3 server on a fixed port that can be stopped and started again (its data stays: moto
    keeps it in this process)."""

    def __init__(self):
        self.srv = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        self.srv.start()
        self.port = self.srv._server.server_port
        self.up = True

    def stop(self):
        self.srv.stop()
        self.up = False

    def start(self):
        self.srv = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.srv.start()
        self.up = True


@pytest.fixture
def s3(monkeypatch):
    import s3fs

    server = Server()
    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
                 "AWS_ENDPOINT_URL": f"http://127.0.0.1:{server.port}"}.items():
        monkeypatch.setenv(k, v)
    s3fs.S3FileSystem.clear_instance_cache()
    server.bucket = f"runs-{uuid.uuid4().hex[:12]}"  # moto keeps buckets for the whole process
    s3fs.S3FileSystem().mkdir(server.bucket)
    monkeypatch.setattr(store, "RETRY_FIRST_DELAY_S", 0.2)
    monkeypatch.setattr(store, "_bounds", store.Bounds(timeout_s=2.0, outage_s=8.0))  # the 1.5 s outage passes
    yield server
    if server.up:
        server.stop()
    s3fs.S3FileSystem.clear_instance_cache()


def _cfg(root):
    return load_config("smoke", [f"storage.root={root}", "engine.backend=fake", "run.name=s3run",
                                 "engine.shard_size=4"])


def test_stage_survives_an_s3_outage(s3, tmp_path, monkeypatch, caplog):
    caplog.set_level("DEBUG", logger="metareward")  # the retries are debug lines
    model = ModelRef(uri="fake", digest="m0", iteration=0)
    cfg = _cfg(f"s3://{s3.bucket}/runs")
    prompts_m = stages.prompts(cfg, 1)
    calls = []
    generate = FakeEngine.generate

    def outage(self, *a, **kw):  # the server goes down after the first shard, and is back 1.5 s later
        calls.append(1)
        if len(calls) == 2:
            s3.stop()
            threading.Timer(1.5, s3.start).start()
        return generate(self, *a, **kw)

    monkeypatch.setattr(FakeEngine, "generate", outage)
    m = stages.generate(cfg, 1, model, prompts_m)
    assert s3.up and m.counts["responses"] == 16 * 4 and m.stats["shards"] == 4
    retried = [r.message for r in caplog.records if "retrying" in r.message]
    assert retried and all(f"s3://{s3.bucket}/runs/s3run/iter_1/generate/" in r for r in retried)
    assert store.read_manifest(m.uri) == m

    # the same stage on a local store, never interrupted, wrote the same responses
    local = _cfg(tmp_path)
    assert stages.generate(local, 1, model, stages.prompts(local, 1)).digests == m.digests


def test_s3_gone_for_good_names_the_uri(s3, monkeypatch, capsys):
    cfg = _cfg(f"s3://{s3.bucket}/runs")
    store.write_json(store.join(RunLayout(cfg.storage.root, "s3run").run, "config.json"), cfg.model_dump(mode="json"))
    s3.stop()
    monkeypatch.setattr(store, "_bounds", store.Bounds(timeout_s=1.0, outage_s=3.0))
    with pytest.raises(store.StoreOutage, match=rf"^s3://{s3.bucket}/runs/s3run/iter_1/prompts/manifest.json: exists "
                                                r"failed for \d s \(\d attempts, storage.outage_s=3\): "
                                                r"EndpointConnectionError"):
        stages.prompts(cfg, 1)

    from flows.cli import main

    monkeypatch.setattr(sys, "argv", ["metareward", "status", "s3run", "--root", f"s3://{s3.bucket}/runs"])
    with pytest.raises(SystemExit) as e:
        main()
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1
    assert err[0].startswith(f"error: s3://{s3.bucket}/runs/s3run/config.json: exists failed for ")
