"""Model folders between a remote run store (``s3://...``) and a worker's local disk.

Engines and trainers read and write plain folders, so a GPU stage working on an S3 store

* pulls the model folder it needs into a local cache once, keyed by the model's digest (``local_model``),
* trains into a local scratch folder, then pushes every file into the store (``model_output``); the stage's
  manifest is written by ``stages.execute`` after this returns, so it is never in the store before its data, and
* finds M_0 in the store too: the orchestrator copies the seed model's folder once to the store's models folder
  (`metareward.runstore.layout`), shared by every run under that root, with ``<digest>.complete`` written
  after its last file (``store_model``).

Digesting a large local folder reads every byte, so ``cached_folder_digest`` remembers a folder's digest in the
model cache under its files' names, sizes and mtimes. On a local store nothing is copied: a model is read in
place, and saved into a ``.tmp-`` sibling folder renamed to its final name once the save returned. Credentials and
the endpoint come from the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ENDPOINT_URL, ...) through
s3fs; nothing here sees them.

    >>> is_remote("/data/runs/smoke"), is_remote("s3://bucket/runs/smoke")
    (False, True)
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

from metareward.runstore import store

log = logging.getLogger("metareward")

COMPLETE = ".complete"  # marker written into a cached copy after its last file (beside a store copy)
DIGESTS = "digests"  # <model cache>/digests/: a local folder's digest, by its files' names, sizes and mtimes


def is_remote(uri: str) -> bool:
    return "://" in uri and not uri.startswith("file://")


def cache_root(model_cache: str | None) -> Path:
    """``storage.model_cache`` or ``~/.cache/metareward/models`` (METAREWARD_CACHE moves it)."""
    from metareward.hardware import model_cache_dir

    return Path(model_cache).expanduser() if model_cache else model_cache_dir()


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
    found = store.retrying(uri, "list", lambda: fs.find(uri, detail=True))
    files = {p: info.get("size") or 0 for p, info in found.items() if not p[len(base):].lstrip("/").startswith(".tmp-")}
    if not files:
        raise FileNotFoundError(f"{uri}: no model files in the store")
    for path, size in files.items():
        local = dest / path[len(base):].lstrip("/")
        local.parent.mkdir(parents=True, exist_ok=True)
        # each file retried on its own: a dropped connection costs one file, not the whole model
        store.retrying(path, "download", lambda: fs.get_file(path, str(local)), size=size)


def folder_files(local: str | Path) -> list[tuple[str, Path]]:
    """(relative name, path) of every file ``store.folder_digest`` reads in a local folder, sorted: symlinks
    followed (a Hugging Face snapshot links its files into a blob store), no ``.tmp-*`` leftovers."""
    root = Path(local)
    found = []
    for dirpath, _, names in os.walk(root, followlinks=True):
        for name in names:
            path = Path(dirpath, name)
            rel = path.relative_to(root).as_posix()
            if not rel.startswith(".tmp-") and path.is_file():
                found.append((rel, path))
    return sorted(found)


def upload_folder(local: str | Path, uri: str) -> None:
    """Every file under the local folder to ``uri`` (same relative names); the folder's digest is unchanged."""
    fs = store.fs_for(uri)
    for rel, path in folder_files(local):
        target = store.join(uri, rel)
        store.retrying(target, "upload", lambda: fs.put_file(str(path), target), size=path.stat().st_size)


def fingerprint(local: str | Path) -> str:
    """What changes when any file of the folder does, read from the file system's metadata only."""
    h = hashlib.sha256()
    for rel, path in folder_files(local):
        st = path.stat()
        h.update(json.dumps([rel, st.st_size, st.st_mtime_ns]).encode())
    return h.hexdigest()


def cached_folder_digest(local: str | Path, model_cache: str | None = None) -> str:
    """``store.folder_digest`` of a local folder, reused from the model cache while no file's name, size or mtime
    changed: a large seed model is read once, not on every run."""
    root = Path(local).resolve()
    memo = _memo(root, model_cache)
    key = fingerprint(root)
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        saved = json.loads(memo.read_text())
        if saved["folder"] == str(root) and saved["files"] == key:
            return saved["digest"]
    digest = store.folder_digest(str(root))
    if fingerprint(root) == key:  # a folder that changed while it was read is digested again next time
        _write_memo(memo, {"folder": str(root), "files": key, "digest": digest})
    return digest


def remember_folder_digest(local: str | Path, digest: str, model_cache: str | None = None) -> None:
    """Remember ``digest`` as the local folder's `cached_folder_digest` for its files as they are now: for a caller
    that has just digested these very files (a stage's saved model), so its first check reads them no more."""
    root = Path(local).resolve()
    _write_memo(_memo(root, model_cache), {"folder": str(root), "files": fingerprint(root), "digest": digest})


def _memo(root: Path, model_cache: str | None) -> Path:
    return cache_root(model_cache) / DIGESTS / f"{hashlib.sha256(str(root).encode()).hexdigest()[:16]}.json"


def _write_memo(memo: Path, entry: dict) -> None:
    """Rename into place, so two processes digesting the same folder never leave a torn entry."""
    memo.parent.mkdir(parents=True, exist_ok=True)
    tmp = memo.with_name(f"{memo.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.write_text(json.dumps(entry) + "\n")
    tmp.replace(memo)


def store_model(local: str | Path, uri: str) -> str:
    """A local model folder copied to ``uri`` (`layout.RunLayout.model`: named by its content digest), unless a
    complete copy is there already; returns ``uri``.

    Re-uploading after a crash rewrites the same objects; the ``<digest>.complete`` marker, written last, is what
    makes a copy complete."""
    marker = uri + COMPLETE
    if store.exists(marker):
        return uri
    upload_folder(local, uri)
    store.write_json(marker, {"digest": uri.rstrip("/").rsplit("/", 1)[-1]})
    log.info("model %s: pushed from %s", uri, local)
    return uri


@contextlib.contextmanager
def model_output(uri: str, model_cache: str | None = None) -> Iterator[str]:
    """A local folder to save a model into, at ``uri`` only once the save returned: a local store's ``.tmp-``
    sibling of ``uri``, then renamed; a remote store's local scratch folder, then uploaded."""
    if not is_remote(uri):
        with _renamed_into_place(Path(uri.removeprefix("file://"))) as save_dir:
            yield save_dir
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


@contextlib.contextmanager
def _renamed_into_place(target: Path) -> Iterator[str]:
    """Trainers write a model's files straight to their final names (save_pretrained), so a crash mid-save would
    leave a torn model at ``target``: they write into a ``.tmp-`` sibling instead (what the stage's next attempt
    removes, `store.remove_temporaries`), renamed to ``target`` on success."""
    tmp = target.with_name(f".tmp-{uuid.uuid4().hex}-{target.name}")
    tmp.mkdir(parents=True)
    try:
        yield str(tmp)
        if target.exists():  # what an interrupted attempt left
            shutil.rmtree(target)
        tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
