"""The run store: fsspec URIs (a local folder now, ``s3://`` later), atomic writes, JSONL rows, manifests.

Where a run's files go is `metareward.runstore.layout`'s business; a stage folder's ``manifest.json`` is written
last, so its presence means "done".

Writes go to a temporary name and are renamed into place, so a crash never leaves a half-written file under
its final name; the manifest is written after every data file, so a stage folder without one is never
mistaken for finished work.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

import fsspec
from pydantic import BaseModel, ValidationError

from metareward import retry
from metareward.records import Manifest

T = TypeVar("T", bound=BaseModel)
R = TypeVar("R")

MANIFEST = "manifest.json"
log = logging.getLogger("metareward.runstore.store")

# Transient store faults (a dropped connection, an S3 endpoint restarting) are retried with exponential backoff
# and jitter (metareward/retry.py says which faults): about 0.5 + 1 + 2 + 4 + 8 + 8 = 23.5 s over 7 attempts, then a
# StoreError naming the URI.
RETRY_ATTEMPTS = 7
RETRY_FIRST_DELAY_S = 0.5
RETRY_MAX_DELAY_S = 8.0


class StoreError(ValueError):
    """Unreadable store content; the message names the URI and line."""


def is_transient(e: BaseException) -> bool:
    """A fault worth retrying (`metareward.retry.network_fault`); never a StoreError, which already names its URI
    (bad content, or retries already spent)."""
    return not isinstance(e, StoreError) and retry.network_fault(e)


def retrying(uri: str, what: str, fn: Callable[[], R]) -> R:
    """``fn()`` with transient faults retried (`metareward.retry.retry`); then a StoreError naming ``uri``."""
    def warn(e: BaseException, attempt: int, delay: float) -> None:
        log.warning("%s %s: %s (attempt %d of %d), retrying in %.1f s", what, uri, type(e).__name__, attempt,
                    RETRY_ATTEMPTS, delay)

    try:
        return retry.retry(fn, attempts=RETRY_ATTEMPTS, first_delay_s=RETRY_FIRST_DELAY_S,
                           max_delay_s=RETRY_MAX_DELAY_S, jitter=0.25, transient=is_transient, on_retry=warn)
    except Exception as e:  # noqa: BLE001  (a transient one here is the last of RETRY_ATTEMPTS)
        if not is_transient(e):
            raise
        raise StoreError(f"{uri}: {what} failed after {RETRY_ATTEMPTS} attempts: {type(e).__name__}: "
                         f"{str(e).splitlines()[0] if str(e) else ''}".rstrip(": ")) from e


def join(*parts: str) -> str:
    head, *rest = parts
    return "/".join([head.rstrip("/")] + [p.strip("/") for p in rest if p])


def fs_for(uri: str) -> fsspec.AbstractFileSystem:
    fs, _ = fsspec.core.url_to_fs(uri)
    return fs


def exists(uri: str) -> bool:
    return retrying(uri, "exists", lambda: fs_for(uri).exists(uri))


def write_bytes(uri: str, data: bytes) -> None:
    """Atomic write: a temporary sibling, then a rename (retried whole on a transient fault)."""
    retrying(uri, "write", lambda: _write_bytes_once(uri, data))


def _write_bytes_once(uri: str, data: bytes) -> None:
    fs = fs_for(uri)
    parent = uri.rsplit("/", 1)[0]
    fs.makedirs(parent, exist_ok=True)
    tmp = f"{parent}/.tmp-{uuid.uuid4().hex}-{uri.rsplit('/', 1)[1]}"
    with fs.open(tmp, "wb") as f:
        f.write(data)
        if hasattr(f, "flush"):
            f.flush()
            if hasattr(f, "fileno"):
                try:
                    os.fsync(f.fileno())
                except (OSError, ValueError, AttributeError):
                    pass
    fs.mv(tmp, uri)


def _read_bytes_once(uri: str) -> bytes:
    with fs_for(uri).open(uri, "rb") as f:
        return f.read()


def read_text(uri: str) -> str:
    data = retrying(uri, "read", lambda: _read_bytes_once(uri))
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise StoreError(f"{uri}: not UTF-8 text (byte {e.start})") from None


def write_json(uri: str, obj) -> None:
    write_bytes(uri, (json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode())


def read_json(uri: str):
    text = read_text(uri)
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise StoreError(f"{uri}: line {e.lineno}: invalid JSON ({e.msg})") from None


def write_jsonl(uri: str, rows: Iterable[BaseModel | dict]) -> str:
    """Write rows atomically; returns the content digest."""
    lines = []
    for r in rows:
        d = r.model_dump(mode="json") if isinstance(r, BaseModel) else r
        lines.append(json.dumps(d, ensure_ascii=False, sort_keys=True))
    data = ("\n".join(lines) + ("\n" if lines else "")).encode()
    write_bytes(uri, data)
    return hashlib.sha256(data).hexdigest()[:16]


def iter_jsonl(uri: str, model: type[T]) -> Iterator[T]:
    for lineno, line in enumerate(read_text(uri).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield model.model_validate_json(line)
        except ValidationError as e:
            err = e.errors()[0]
            field = ".".join(str(p) for p in err["loc"]) or "(row)"
            raise StoreError(f"{uri}: line {lineno}: {field}: {err['msg']}") from None


def read_jsonl(uri: str, model: type[T]) -> list[T]:
    return list(iter_jsonl(uri, model))


def file_digest(uri: str) -> str:
    def once() -> str:
        h = hashlib.sha256()
        with fs_for(uri).open(uri, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        return h.hexdigest()[:16]

    return retrying(uri, "read", once)


def folder_digest(uri: str) -> str:
    """Digest of every file under a folder (names and contents), e.g. a saved model."""
    fs = fs_for(uri)
    h = hashlib.sha256()
    base = fs._strip_protocol(uri).rstrip("/")
    for path in sorted(retrying(uri, "list", lambda: fs.find(uri))):
        rel = path[len(base) :].lstrip("/")
        if rel.startswith(".tmp-"):
            continue
        h.update(rel.encode())
        h.update(file_digest(path if "://" not in uri else f"{uri.split('://')[0]}://{path}").encode())
    return h.hexdigest()[:16]


class ManifestError(StoreError):
    """A manifest.json that is not a manifest (not JSON, or JSON of the wrong shape): its stage is not done."""


def read_manifest(stage_folder: str) -> Manifest | None:
    """The stage's manifest, its files resolved against ``stage_folder`` (`rebased`), or None when it has none."""
    uri = join(stage_folder, MANIFEST)
    if not exists(uri):
        return None
    data = retrying(uri, "read", lambda: _read_bytes_once(uri))  # an outage stays a StoreError, not "damaged"
    return rebased(parse_manifest(uri, data), stage_folder)


def parse_manifest(uri: str, data: bytes) -> Manifest:
    """The manifest in ``data`` (read from ``uri``); a ManifestError naming the URI and the field otherwise."""
    try:
        obj = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise ManifestError(f"{uri}: not UTF-8 text (byte {e.start})") from None
    except json.JSONDecodeError as e:
        raise ManifestError(f"{uri}: line {e.lineno}: invalid JSON ({e.msg})") from None
    if not isinstance(obj, dict):
        raise ManifestError(f"{uri}: not a manifest (a JSON {type(obj).__name__}, not an object)")
    try:
        return Manifest.model_validate(obj)
    except ValidationError as e:
        err = e.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "(manifest)"
        raise ManifestError(f"{uri}: {field}: {err['msg']}") from None


def is_relative(name: str) -> bool:
    return "://" not in name and not name.startswith("/")


def rebased(m: Manifest, stage_folder: str) -> Manifest:
    """``m`` as read from ``stage_folder``: its ``uri`` that folder and its files under it, whether the manifest names
    them relative to its folder or (an earlier version) by absolute URIs under the folder it was written to. A
    name that leaves the stage folder is refused: a copied run never reads another run's files."""
    where, base = join(stage_folder, MANIFEST), m.uri.rstrip("/")
    files = {}
    for name, f in m.files.items():
        rel = f if is_relative(f) else f[len(base) + 1:] if f.startswith(base + "/") else None
        if rel is None or not rel or ".." in rel.split("/"):
            raise ManifestError(f"{where}: files.{name}: {f} is not in the stage folder")
        files[name] = join(stage_folder, rel)
    return m.model_copy(update={"uri": stage_folder.rstrip("/"), "files": files})


def write_manifest(manifest: Manifest) -> None:
    """Into ``manifest.uri``, its files named relative to that folder (`rebased` resolves them where it is read)."""
    from metareward.runstore.redact import redact_obj  # no secret from the environment is ever written into a manifest

    data = manifest.model_dump(mode="json")
    base = manifest.uri.rstrip("/") + "/"
    outside = sorted(f for f in manifest.files.values() if not f.startswith(base))
    if outside:
        raise ValueError(f"{manifest.uri}: a stage's outputs live in its folder, not at {outside[0]}")
    data["files"] = {name: f[len(base):] for name, f in manifest.files.items()}
    write_json(join(manifest.uri, MANIFEST), redact_obj(data))


def invalidate(stage_folder: str) -> None:
    """Drop a stage's manifest before recomputing it, so a crash mid-way leaves it 'not done'."""
    uri = join(stage_folder, MANIFEST)
    fs = fs_for(uri)
    if exists(uri):
        retrying(uri, "delete", lambda: fs.rm(uri))


def remove(uri: str) -> None:
    """Delete a file or folder if it exists (leftovers of an interrupted attempt, finished scratch space)."""
    if exists(uri):
        retrying(uri, "delete", lambda: fs_for(uri).rm(uri, recursive=True))


def remove_temporaries(folder: str) -> int:
    """Delete ``.tmp-*`` files an interrupted write left in a folder (never read: no final name); returns how many."""
    fs = fs_for(folder)
    if not exists(folder):
        return 0
    names = retrying(folder, "list", lambda: fs.ls(folder, detail=False))
    stale = [p for p in names if p.rstrip("/").rsplit("/", 1)[-1].startswith(".tmp-")]
    for p in stale:
        retrying(folder, "delete", lambda p=p: fs.rm(p, recursive=True))
    return len(stale)
