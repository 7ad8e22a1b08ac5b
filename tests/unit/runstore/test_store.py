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


def _written(tmp_path, root: str) -> str:
    """A judge stage under ``root`` with one file and a model folder; its folder."""
    folder = RunLayout(root, "run").stage(1, "judge")
    store.write_jsonl(store.join(folder, "judgments.jsonl"), [Prompt(id="p1", prompt="mine")])
    store.write_bytes(store.join(folder, "model", "w.bin"), b"abc")
    store.write_manifest(Manifest(stage="judge", iteration=1, run="run", key="k1", uri=folder,
                                  files={"judgments": store.join(folder, "judgments.jsonl"),
                                         "model": store.join(folder, "model")}))
    return folder


def test_a_manifest_names_its_files_relative_to_its_folder(tmp_path):
    folder = _written(tmp_path, str(tmp_path / "a"))
    on_disk = json.loads((tmp_path / "a/run/iter_1/judge/manifest.json").read_text())
    assert on_disk["files"] == {"judgments": "judgments.jsonl", "model": "model"}
    assert store.read_manifest(folder).files == {"judgments": f"{folder}/judgments.jsonl", "model": f"{folder}/model"}


def test_a_copied_stage_reads_its_own_files(tmp_path):
    import shutil

    _written(tmp_path, str(tmp_path / "a"))
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    shutil.rmtree(tmp_path / "a")  # the original is gone: nothing may point at it
    folder = str(tmp_path / "b/run/iter_1/judge")
    m = store.read_manifest(folder)
    assert m.uri == folder and m.files["judgments"] == f"{folder}/judgments.jsonl"
    assert store.read_jsonl(m.files["judgments"], Prompt) == [Prompt(id="p1", prompt="mine")]


def test_a_stage_copied_to_another_bucket_prefix_reads_its_own_files(tmp_path, s3_bucket):
    import fsspec

    _written(tmp_path, f"{s3_bucket}/a")
    fs = fsspec.filesystem("s3")
    fs.copy(f"{s3_bucket}/a/run", f"{s3_bucket}/b/run", recursive=True)
    fs.rm(f"{s3_bucket}/a", recursive=True)
    folder = f"{s3_bucket}/b/run/iter_1/judge"
    m = store.read_manifest(folder)
    assert m.files == {"judgments": f"{folder}/judgments.jsonl", "model": f"{folder}/model"}
    assert store.read_jsonl(m.files["judgments"], Prompt)[0].prompt == "mine"


def test_an_earlier_versions_absolute_names_are_rebased(tmp_path):
    """Manifests written before relative names held absolute URIs under the folder they were written to."""
    old, new = tmp_path / "old/run/iter_1/judge", tmp_path / "new/run/iter_1/judge"
    new.mkdir(parents=True)
    (new / "manifest.json").write_text(json.dumps({
        "stage": "judge", "iteration": 1, "run": "run", "key": "k1", "uri": str(old),
        "files": {"judgments": f"{old}/judgments.jsonl", "curve": f"{old}/sub/log.json"}, "digests": {}}))
    m = store.read_manifest(str(new))
    assert m.uri == str(new) and m.files == {"judgments": f"{new}/judgments.jsonl", "curve": f"{new}/sub/log.json"}


@pytest.mark.parametrize("name", ["/elsewhere/judgments.jsonl", "../other/judgments.jsonl", "s3://b/x.jsonl"])
def test_a_file_outside_the_stage_folder_is_refused(tmp_path, name):
    folder = tmp_path / "run/iter_1/judge"
    folder.mkdir(parents=True)
    (folder / "manifest.json").write_text(json.dumps({"stage": "judge", "iteration": 1, "run": "run", "key": "k",
                                                      "uri": str(folder), "files": {"judgments": name}}))
    with pytest.raises(store.ManifestError, match=r"manifest.json: files.judgments: .* is not in the stage folder"):
        store.read_manifest(str(folder))
    with pytest.raises(ValueError, match="a stage's outputs live in its folder"):
        store.write_manifest(Manifest(stage="judge", iteration=1, run="run", key="k", uri=str(tmp_path / "x"),
                                      files={"judgments": str(tmp_path / "y/judgments.jsonl")}))


@pytest.mark.parametrize("text,expected", [
    ("{}", "manifest.json: stage: Field required"),
    ('{"stage": "judge", "iteration": "one", "run": "r", "key": "k", "uri": "u"}',
     "manifest.json: iteration: Input should be a valid integer"),
    ("[1, 2]", "manifest.json: not a manifest (a JSON list, not an object)"),
    ('{"stage": ', "manifest.json: line 1: invalid JSON"),
])
def test_a_manifest_of_the_wrong_shape_is_one_line_naming_uri_and_field(tmp_path, text, expected):
    (tmp_path / "manifest.json").write_text(text)
    with pytest.raises(store.ManifestError) as e:
        store.read_manifest(str(tmp_path))
    assert str(e.value).startswith(str(tmp_path)) and expected in str(e.value) and "\n" not in str(e.value)
    assert isinstance(e.value, store.StoreError)  # the CLI's one line


def test_folder_digest_changes_with_content(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "w.bin").write_bytes(b"abc")
    d = store.folder_digest(str(tmp_path / "m"))
    (tmp_path / "m" / "w.bin").write_bytes(b"abd")
    assert d != store.folder_digest(str(tmp_path / "m"))


# ------------------------------------------------------------------------------------------ retries


@pytest.fixture
def clock(monkeypatch):
    """Fake time for `store.retrying` (sleeps move it; an attempt lasts ``clock.attempt_s``), no jitter, and the
    bounds storage.timeout_s=5, storage.outage_s=30."""
    from metareward import retry

    c = retry.FakeClock()
    monkeypatch.setattr(store, "_now", c.now)
    monkeypatch.setattr(store, "_sleep", c.sleep)
    monkeypatch.setattr(retry.random, "random", lambda: 0.5)  # the jitter factor 1 - j + 2 j x 0.5 = 1
    monkeypatch.setattr(store, "_bounds", store.Bounds(timeout_s=5.0, outage_s=30.0))
    return c


def test_transient_faults_are_retried_until_the_store_answers(clock, caplog):
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionResetError(104, "Connection reset by peer")
        return "ok"

    caplog.set_level("DEBUG", logger="metareward")
    assert store.retrying("s3://bucket/run/x.json", "read", flaky) == "ok"
    assert len(calls) == 3 and clock.slept == [0.5, 1.0]
    assert sum("retrying" in r.message for r in caplog.records) == 2


def test_a_refused_endpoint_is_given_up_before_the_outage_bound(clock, monkeypatch):
    """Failing at once: sleeps 0.5, 1, 2, 4, 8, 8 (t = 23.5); another 8 s and a 5 s attempt would end at 36.5 > 30."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")

    class EndpointConnectionError(Exception):  # botocore's, matched by name
        pass

    def down():
        clock.calls += 1
        raise EndpointConnectionError('Could not connect to the endpoint URL: "http://127.0.0.1:9/bucket"')

    with pytest.raises(store.StoreOutage) as e:
        store.retrying("s3://bucket/run/x.json", "read", down)
    assert clock.calls == 7 and clock.slept == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0] and clock.t == 23.5
    assert str(e.value) == (
        's3://bucket/run/x.json: read failed for 24 s (7 attempts, storage.outage_s=30): EndpointConnectionError: '
        'Could not connect to the endpoint URL: "http://127.0.0.1:9/bucket"; check that the endpoint '
        'http://127.0.0.1:9 answers (AWS_ENDPOINT_URL) and the credentials; finished stages are kept: '
        '`metareward resume` continues')


def test_a_silent_endpoint_costs_its_timeouts_inside_the_bound(clock):
    """Each attempt times out after 5 s: fails at 5, 10.5, 16.5, 23.5 s (sleeps 0.5, 1, 2 between); a 4 s sleep and
    another attempt would end at 32.5 > 30."""
    clock.attempt_s = 5.0
    with pytest.raises(store.StoreOutage, match=r"^s3://b/x: exists failed for 24 s \(4 attempts, "
                                                r"storage.outage_s=30\): TimeoutError: attempt 4; "):
        store.retrying("s3://b/x", "exists", clock.fail)
    assert clock.calls == 4 and clock.slept == [0.5, 1.0, 2.0] and clock.t == 23.5


def test_missing_credentials_are_one_named_error_not_retried(clock):
    class NoCredentialsError(Exception):  # botocore's, matched by name
        pass

    def fail():
        clock.calls += 1
        raise NoCredentialsError("Unable to locate credentials")

    with pytest.raises(store.StoreError, match=r"^s3://b/run/config.json: write: no credentials for the store: set "
                                               r"AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY") as e:
        store.retrying("s3://b/run/config.json", "write", fail)
    assert clock.calls == 1 and not isinstance(e.value, store.StoreOutage)


def test_missing_files_and_denied_permissions_are_not_retried(clock):
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


def test_an_attempt_slower_than_one_timeout_counts_as_it_was(clock):
    """An attempt that makes several requests took 12 s (timeout 5 s): failed at 12; 12 + 0.5 + 12 <= 30, so one
    more, failing at 24.5; 24.5 + 1 + 12 > 30: given up there, not at 37.5."""
    clock.attempt_s = 12.0
    with pytest.raises(store.StoreOutage, match=r"failed for 24 s \(2 attempts, storage.outage_s=30\)"):
        store.retrying("s3://b/x", "write", clock.fail)
    assert clock.calls == 2 and clock.slept == [0.5] and clock.t == 24.5
