"""Model folders between a remote run store (``s3://...``) and a worker's local disk.

Engines and trainers read and write plain folders, so a GPU stage working on an S3 store

* pulls the model folder it needs into a local cache once, keyed by the model's digest (``local_model``), and
* trains into a local scratch folder, then pushes every file into the store (``model_output``); the stage's
  manifest is written by ``stages.execute`` after this returns, so it is never in the store before its data.

On a local store both are no-ops: the folder is used in place. Credentials and the endpoint come from the
environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL, ...) through s3fs; nothing here sees them.

    >>> is_remote("/data/runs/smoke/iter_1/train/model"), is_remote("s3://bucket/runs/smoke/iter_1/train/model")
    (False, True)
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

from metareward.runstore import store

log = logging.getLogger("metareward")

COMPLETE = ".complete"  # marker written into a cached copy after its last file


def is_remote(uri: str) -> bool:
    return "://" in uri and not uri.startswith("file://")


def cache_root(model_cache: str | None) -> Path:
    """``storage.model_cache`` or ``~/.cache/metareward/models`` (METAREWARD_CACHE moves it)."""
    from metareward.engines.models import default_cache_dir

    return Path(model_cache).expanduser() if model_cache else default_cache_dir()


def local_model(uri: str, digest: str, model_cache: str | None = None) -> str:
    """A local folder holding the model at ``uri``: the folder itself when local, else a cached copy named by
    the digest (a finished copy is reused; a half-downloaded one never is)."""
    if not is_remote(uri):
        return uri
    target = cache_root(model_cache) / "store" / digest
    if (target / COMPLETE).is_file():
        return str(target)
    tmp = target.with_name(f"{digest}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.mkdir(parents=True)
    try:
        download_folder(uri, tmp)
        (tmp / COMPLETE).write_text(uri + "\n")
        if target.exists():  # another process finished first (or a stale partial copy): keep one
            shutil.rmtree(target, ignore_errors=True)
        tmp.replace(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("model %s: pulled into %s", uri, target)
    return str(target)


def download_folder(uri: str, dest: Path) -> None:
    """Every file under ``uri`` into ``dest`` with the same relative names."""
    fs = store.fs_for(uri)
    base = fs._strip_protocol(uri).rstrip("/")
    files = [p for p in store.retrying(uri, "list", lambda: fs.find(uri))
             if not p[len(base):].lstrip("/").startswith(".tmp-")]
    if not files:
        raise FileNotFoundError(f"{uri}: no model files in the store")
    for path in files:
        local = dest / path[len(base):].lstrip("/")
        local.parent.mkdir(parents=True, exist_ok=True)
        # each file retried on its own: a dropped connection costs one file, not the whole model
        store.retrying(path, "download", lambda: fs.get_file(path, str(local)))


def upload_folder(local: str | Path, uri: str) -> None:
    """Every file under the local folder to ``uri`` (same relative names); the folder's digest is unchanged."""
    fs = store.fs_for(uri)
    root = Path(local)
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        target = store.join(uri, path.relative_to(root).as_posix())
        store.retrying(target, "upload", lambda: fs.put_file(str(path), target))


@contextlib.contextmanager
def model_output(uri: str, model_cache: str | None = None) -> Iterator[str]:
    """A local folder to save a model into; on a remote store its files are uploaded to ``uri`` on success."""
    if not is_remote(uri):
        yield uri
        return
    scratch_root = cache_root(model_cache) / "scratch"
    scratch_root.mkdir(parents=True, exist_ok=True)
    scratch = tempfile.mkdtemp(prefix="model-", dir=scratch_root)
    try:
        yield scratch
        store.remove(uri)  # no stale files from a crashed earlier attempt
        upload_folder(scratch, uri)
        log.info("model %s: pushed from %s", uri, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
