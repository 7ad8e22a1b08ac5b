"""The run store: fsspec URIs (a local folder or ``s3://``), atomic writes, JSONL rows, manifests, bounded calls.

Where a run's files go is `metareward.runstore.layout`'s business; a stage folder's ``manifest.json`` is written
last, so its presence means "done".

Writes go to a temporary name and are renamed into place, so a crash never leaves a half-written file under
its final name; the manifest is written after every data file, so a stage folder without one is never
mistaken for finished work.

Every call is bounded (`Bounds`, set from the run's config by `configure`): on S3 a request waits at most
``storage.timeout_s`` to connect and for each read, the client libraries do not retry, and `retrying` tries an
operation again with backoff until ``storage.outage_s`` would pass, then stops with one line naming the URI.
It runs over the usual ~400 lines on purpose: the one retry policy and the file operations it bounds are read together.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
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
# and jitter for as long as the run's bounds allow (`Bounds`, `retrying`; metareward/retry.py says which faults).
RETRY_FIRST_DELAY_S = 0.5
RETRY_MAX_DELAY_S = 8.0
S3_PROTOCOLS = ("s3", "s3a")
TIMEOUT_ENV, OUTAGE_ENV = "METAREWARD_STORE_TIMEOUT_S", "METAREWARD_STORE_OUTAGE_S"
MIN_TRANSFER_RATE = 1e6  # bytes/s: a transfer slower than this may be given up as stalled (`retrying`'s ``size``)
CREDENTIAL_ERRORS = {"NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError"}  # botocore's


class StoreError(ValueError):
    """Unreadable store content; the message names the URI and line."""


class StoreOutage(StoreError):
    """A store operation kept failing for ``storage.outage_s``: not worth another try by Prefect."""


@dataclass(frozen=True)
class Bounds:
    """``storage.timeout_s`` and ``storage.outage_s`` (`metareward.config.StorageSection`)."""

    timeout_s: float = 20.0
    outage_s: float = 180.0

    @classmethod
    def from_env(cls) -> Bounds:
        """The bounds a parent process passed on (`configure`), else the defaults."""
        def read(name: str, default: float) -> float:
            try:
                value = float(os.environ.get(name, default))
            except ValueError:
                return default
            return value if 0 < value < float("inf") else default

        return cls(read(TIMEOUT_ENV, cls.timeout_s), read(OUTAGE_ENV, cls.outage_s))


_bounds = Bounds.from_env()
_now, _sleep = time.monotonic, time.sleep  # what `retrying` measures and waits with (tests move a fake clock)


def configure(storage) -> Bounds:
    """Apply a run's ``storage`` section (timeouts, outage bound) to every store call this process makes from now
    on, and to the stage processes it starts; an unknown protocol in ``storage.root`` is refused here. Returns the
    bounds in force before."""
    global _bounds
    check_protocol(storage.root, "storage.root")
    before, _bounds = _bounds, Bounds(storage.timeout_s, storage.outage_s)
    # stage processes read the run's config through the store: they need the bounds before they have it
    os.environ[TIMEOUT_ENV], os.environ[OUTAGE_ENV] = repr(_bounds.timeout_s), repr(_bounds.outage_s)
    return before


def bounds() -> Bounds:
    return _bounds


def check_protocol(uri: str, where: str | None = None) -> None:
    """A StoreError naming ``where`` (the setting) and ``uri`` unless fsspec knows the protocol of ``uri`` and its library is installed."""
    protocol = uri.split("://", 1)[0] if "://" in uri else "file"
    named = f"{where}={uri}" if where else uri
    try:
        fsspec.get_filesystem_class(protocol)
    except ValueError:
        raise StoreError(f"{named}: unknown protocol '{protocol}://' (a local folder or s3://bucket/prefix)") \
            from None
    except ImportError as e:
        raise StoreError(f"{named}: {protocol}:// needs a library that is not installed: {e}") from None


def is_transient(e: BaseException) -> bool:
    """A fault worth retrying (`metareward.retry.network_fault`); never a StoreError, which already names its URI
    (bad content, or retries already spent)."""
    return not isinstance(e, StoreError) and retry.network_fault(e)


def retrying(uri: str, what: str, fn: Callable[[], R], size: int = 0) -> R:
    """``fn()`` with transient faults retried until ``storage.outage_s`` would pass (`metareward.retry.retry_until`);
    then a StoreOutage naming ``uri``, the operation and what to check. Missing credentials are a StoreError.

    On a remote store a call still running at ``storage.outage_s`` (+ ``size`` bytes at `MIN_TRANSFER_RATE`) is
    given up too: a request body sent to an endpoint that stopped reading has no timeout in aiohttp."""
    b, start, attempts = _bounds, _now(), [1]
    if "://" in uri and not uri.startswith("file://"):
        fn = _watched(fn, uri, what, start, start + b.outage_s + size / MIN_TRANSFER_RATE)

    def warn(e: BaseException, attempt: int, delay: float) -> None:
        attempts[0] = attempt + 1
        # debug: an outage ends as one line (the StoreOutage); `metareward --debug` shows each retry
        log.debug("%s %s: %s (attempt %d, %.0f s of storage.outage_s=%g), retrying in %.1f s", what, uri,
                    type(e).__name__, attempt, _now() - start, b.outage_s, delay)

    try:
        return retry.retry_until(fn, deadline_s=b.outage_s, attempt_s=b.timeout_s, first_delay_s=RETRY_FIRST_DELAY_S,
                                 max_delay_s=RETRY_MAX_DELAY_S, jitter=0.25, transient=is_transient, on_retry=warn,
                                 clock=_now, sleep=_sleep)
    except Exception as e:  # noqa: BLE001  (a transient one here is the last the bound allowed)
        if any(c.__name__ in CREDENTIAL_ERRORS for c in type(e).__mro__):
            raise StoreError(f"{uri}: {what}: no credentials for the store: set AWS_ACCESS_KEY_ID and "
                             "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)") from e
        if not is_transient(e):
            raise
        detail = str(e).splitlines()[0] if str(e) else ""
        raise StoreOutage(f"{uri}: {what} failed for {_now() - start:.0f} s ({attempts[0]} attempt{'s' if attempts[0] > 1 else ''}, "
                          f"storage.outage_s={b.outage_s:g}): {type(e).__name__}{': ' + detail if detail else ''}; "
                          f"{_what_to_check(uri)}; finished stages are kept: `metareward resume` continues") from e


def _watched(fn: Callable[[], R], uri: str, what: str, start: float, deadline: float) -> Callable[[], R]:
    """``fn`` in a thread of its own, abandoned (a StoreOutage) if still running at ``deadline``; the process then
    ends with the error, so the abandoned call can never act after a later one."""
    def call() -> R:
        box: dict = {}

        def run() -> None:
            try:
                box["value"] = fn()
            except BaseException as e:  # noqa: BLE001  (handed to the caller's thread)
                box["error"] = e

        worker = threading.Thread(target=run, daemon=True, name=f"store {what}")
        worker.start()
        worker.join(max(0.0, deadline - _now()))
        if worker.is_alive():
            raise StoreOutage(f"{uri}: {what}: no answer after {_now() - start:.0f} s (storage.outage_s="
                              f"{_bounds.outage_s:g}, + {MIN_TRANSFER_RATE / 1e6:g} s per MB transferred); "
                              f"{_what_to_check(uri)}; finished stages are kept: `metareward resume` continues")
        if "error" in box:
            raise box["error"]
        return box["value"]

    return call


def _what_to_check(uri: str) -> str:
    if "://" not in uri or uri.startswith("file://"):
        return "check the disk or network mount"
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    return (f"check that the endpoint {endpoint} answers (AWS_ENDPOINT_URL)" if endpoint else
            "check the network and the endpoint (AWS_ENDPOINT_URL)") + " and the credentials"


def join(*parts: str) -> str:
    head, *rest = parts
    return "/".join([head.rstrip("/")] + [p.strip("/") for p in rest if p])


def fs_for(uri: str) -> fsspec.AbstractFileSystem:
    """The file system of ``uri``; on S3 one attempt is one request bounded by ``storage.timeout_s``, since
    `retrying` is the one retry policy (botocore and s3fs would otherwise retry 5 x 5 times inside each attempt)."""
    protocol = uri.split("://", 1)[0] if "://" in uri else "file"
    if protocol not in S3_PROTOCOLS:
        try:
            return fsspec.core.url_to_fs(uri)[0]
        except (ValueError, ImportError):
            check_protocol(uri)  # names the protocol; anything else is raised as it was
            raise
    t = _bounds.timeout_s
    fs = fsspec.filesystem(protocol, config_kwargs={
        "connect_timeout": t, "read_timeout": t, "retries": {"total_max_attempts": 1}})
    fs.retries = 1  # s3fs's own retry loop (_error_wrapper) takes this from the instance; it has no argument
    return fs


def exists(uri: str) -> bool:
    return retrying(uri, "exists", lambda: fs_for(uri).exists(uri))


def write_bytes(uri: str, data: bytes) -> None:
    """Atomic write: a temporary sibling, then a rename (retried whole on a transient fault)."""
    retrying(uri, "write", lambda: _write_bytes_once(uri, data), size=len(data))


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
            raise StoreError(f"{uri}: line {lineno}: {first_error(e, '(row)')}") from None


def first_error(e: ValidationError, whole: str) -> str:
    """``field: what is wrong`` of a validation error's first error (``whole`` when it concerns the whole record)."""
    err = e.errors()[0]
    return f"{'.'.join(str(p) for p in err['loc']) or whole}: {err['msg']}"


def read_jsonl(uri: str, model: type[T]) -> list[T]:
    return list(iter_jsonl(uri, model))


def file_digest(uri: str) -> str:
    def once() -> str:
        h = hashlib.sha256()
        with fs_for(uri).open(uri, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        return h.hexdigest()[:16]

    size = retrying(uri, "size", lambda: fs_for(uri).size(uri)) if "://" in uri else 0
    return retrying(uri, "read", once, size=size or 0)


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
        raise ManifestError(f"{uri}: {first_error(e, '(manifest)')}") from None


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


def rm(fs: fsspec.AbstractFileSystem, path: str, recursive: bool = False) -> None:
    """Delete ``path``; done when it is gone, since a retried delete whose first reply was lost finds nothing."""
    try:
        fs.rm(path, recursive=recursive)
    except FileNotFoundError:
        pass


def invalidate(stage_folder: str) -> None:
    """Drop a stage's manifest before recomputing it, so a crash mid-way leaves it 'not done'."""
    uri = join(stage_folder, MANIFEST)
    fs = fs_for(uri)
    if exists(uri):
        retrying(uri, "delete", lambda: rm(fs, uri))


def remove(uri: str) -> None:
    """Delete a file or folder if it exists (leftovers of an interrupted attempt, finished scratch space)."""
    if exists(uri):
        retrying(uri, "delete", lambda: rm(fs_for(uri), uri, recursive=True))


def remove_temporaries(folder: str) -> int:
    """Delete ``.tmp-*`` files an interrupted write left in a folder (never read: no final name); returns how many."""
    fs = fs_for(folder)
    if not exists(folder):
        return 0
    names = retrying(folder, "list", lambda: fs.ls(folder, detail=False))
    stale = [p for p in names if p.rstrip("/").rsplit("/", 1)[-1].startswith(".tmp-")]
    for p in stale:
        retrying(folder, "delete", lambda p=p: rm(fs, p, recursive=True))
    return len(stale)
