import json

import pytest

from metareward.runstore import store
from metareward.records import Manifest, Prompt
from metareward.runstore.layout import RunLayout


def test_jsonl_roundtrip_and_digest(tmp_path):
    uri = str(tmp_path / "a" / "rows.jsonl")
    d1 = store.write_jsonl(uri, [Prompt(id="p1", prompt="hi"), Prompt(id="p2", prompt="é")])
    assert store.read_jsonl(uri, Prompt) == [Prompt(id="p1", prompt="hi"), Prompt(id="p2", prompt="é")]
    assert d1 == store.write_jsonl(uri, [Prompt(id="p1", prompt="hi"), Prompt(id="p2", prompt="é")])
    assert not [p for p in (tmp_path / "a").iterdir() if p.name.startswith(".tmp-")]  # no temporaries left


def test_bad_jsonl_line_is_named(tmp_path):
    f = tmp_path / "rows.jsonl"
    f.write_text(json.dumps({"id": "p1", "prompt": "ok"}) + "\n" + json.dumps({"id": "p2"}) + "\n")
    with pytest.raises(store.StoreError, match=r"rows.jsonl: line 2: prompt: Field required"):
        store.read_jsonl(str(f), Prompt)


def test_manifest_is_the_done_marker(tmp_path):
    folder = RunLayout(str(tmp_path), "run").stage(1, "judge")
    assert store.read_manifest(folder) is None
    m = Manifest(stage="judge", iteration=1, run="run", key="k1", uri=folder, digests={"x": "d"})
    store.write_manifest(m)
    assert store.read_manifest(folder) == m
    store.invalidate(folder)
    assert store.read_manifest(folder) is None


def test_manifest_digest_depends_on_key_and_outputs():
    base = dict(stage="s", iteration=1, run="r", uri="u")
    a = Manifest(key="k", digests={"x": "1"}, **base)
    assert a.digest == Manifest(key="k", digests={"x": "1"}, counts={"n": 3}, **base).digest
    assert a.digest != Manifest(key="k", digests={"x": "2"}, **base).digest
    assert a.digest != Manifest(key="k2", digests={"x": "1"}, **base).digest


def test_folder_digest_changes_with_content(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "w.bin").write_bytes(b"abc")
    d = store.folder_digest(str(tmp_path / "m"))
    (tmp_path / "m" / "w.bin").write_bytes(b"abd")
    assert d != store.folder_digest(str(tmp_path / "m"))


# ------------------------------------------------------------------------------------------ retries


@pytest.fixture
def no_backoff(monkeypatch):
    from metareward.runstore import store

    monkeypatch.setattr(store, "RETRY_FIRST_DELAY_S", 0.0)
    monkeypatch.setattr(store, "RETRY_ATTEMPTS", 4)


def test_transient_faults_are_retried_until_the_store_answers(no_backoff, caplog):
    from metareward.runstore import store

    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionResetError(104, "Connection reset by peer")
        return "ok"

    assert store.retrying("s3://bucket/run/x.json", "read", flaky) == "ok"
    assert len(calls) == 3
    assert sum("retrying" in r.message for r in caplog.records) == 2


def test_exhausted_retries_name_the_uri(no_backoff):
    from metareward.runstore import store

    class EndpointConnectionError(Exception):  # botocore's, matched by name
        pass

    calls = []

    def down():
        calls.append(1)
        raise EndpointConnectionError('Could not connect to the endpoint URL: "http://127.0.0.1:9/bucket"')

    with pytest.raises(store.StoreError) as e:
        store.retrying("s3://bucket/run/x.json", "read", down)
    assert len(calls) == 4
    assert str(e.value).startswith("s3://bucket/run/x.json: read failed after 4 attempts: EndpointConnectionError")


def test_missing_files_and_denied_permissions_are_not_retried(no_backoff):
    from metareward.runstore import store

    for exc in (FileNotFoundError(2, "No such file"), PermissionError(13, "denied"), ValueError("bad")):
        calls = []

        def fail(exc=exc):
            calls.append(1)
            raise exc

        with pytest.raises(type(exc)):
            store.retrying("/x", "read", fail)
        assert len(calls) == 1
    assert store.is_transient(OSError(5, "Input/output error"))  # EIO: a flaky disk or network mount
    assert not store.is_transient(OSError(28, "No space left on device"))
