"""Whether a stage's files are still the ones its manifest describes: a file that is missing or whose bytes are not
those the manifest's digest names makes the stage *damaged*. A damaged stage is never used: ``execute``
recomputes it, ``metareward status`` shows it, the report, the export and tracking refuse it with one line.

What is compared, per output the manifest lists:

- a file: its content digest (``digests``, or ``checks`` for one that is not keyed on, e.g. train's log_history);
- a folder (a model): its file names and sizes (``sizes``); on a local store also its content digest, remembered
  by the files' names, sizes and mtimes (`remote.cached_folder_digest`), so a large model is read once, not on every
  check; an ``s3://`` store is not downloaded for a check: names and sizes only;
- an output an earlier version recorded without a digest or sizes: that it exists.

Within one process a file's digest is remembered by its size and mtime (local) or ETag (s3://): the flow checks a
stage before reusing it and again for Prefect's cache key, and reads it once.

    >>> problem_with({"a.jsonl": 3}, {"a.jsonl": 3, "b.bin": 1})
    'b.bin: not in the manifest (an extra file)'
"""

from __future__ import annotations

import os

from metareward.records import Manifest
from metareward.runstore import remote, store

_seen: dict[tuple, str] = {}  # (uri, size, mtime or ETag) -> content digest, in this process


class DamagedStage(store.StoreError):
    """A stage whose manifest lists a file that is missing or not what its digest names."""


def problems(m: Manifest, model_cache: str | None = None) -> list[str]:
    """What is wrong with the stage's outputs, one line each naming the file; [] when every one is whole."""
    out = []
    for name in sorted(m.files):
        uri = m.files[name]
        wrong = _problem(uri, m.digests.get(name) or m.checks.get(name), m.sizes.get(name), model_cache)
        if wrong:
            out.append(wrong if wrong.startswith(uri) else f"{uri}: {wrong}")
    return out


def checked(stage_folder: str, model_cache: str | None = None) -> Manifest | None:
    """The stage's manifest (None: not done), or a DamagedStage naming the stage and its first damaged file."""
    m = store.read_manifest(stage_folder)
    if m is None:
        return None
    wrong = problems(m, model_cache)
    if wrong:
        raise DamagedStage(f"{m.stage} iter {m.iteration}: damaged: {describe(wrong)}; "
                           "`metareward resume` recomputes it")
    return m


def describe(wrong: list[str]) -> str:
    """The first problem, and how many more."""
    return wrong[0] + (f" (and {len(wrong) - 1} more)" if len(wrong) > 1 else "")


def seal(files: dict[str, str], digests: dict[str, str], model_cache: str | None = None
         ) -> tuple[dict[str, str], dict[str, dict[str, int]]]:
    """What a check needs beyond the stage's digests, taken right after the stage wrote its outputs: the content digest
    of each file without one (``checks``) and the file sizes of each folder (``sizes``)."""
    checks, sizes = {}, {}
    for name, uri in files.items():
        listing = folder_sizes(uri)
        if listing is not None:
            sizes[name] = listing
            if name in digests and not remote.is_remote(uri):  # its digest was just computed from these files
                remote.remember_folder_digest(uri, digests[name], model_cache)
        elif name not in digests:
            checks[name] = file_digest(uri)
    return checks, sizes


def folder_sizes(uri: str) -> dict[str, int] | None:
    """Relative name -> bytes of every file under folder ``uri`` (no ``.tmp-*`` leftover); None when not a folder."""
    fs = store.fs_for(uri)
    if remote.is_remote(uri):
        fs.invalidate_cache(uri)  # another process may have written it since this one listed it
    if not store.retrying(uri, "list", lambda: fs.isdir(uri)):
        return None
    base = fs._strip_protocol(uri).rstrip("/")
    found = store.retrying(uri, "list", lambda: fs.find(uri, detail=True))
    rels = {path[len(base):].lstrip("/"): info for path, info in found.items()}
    return {rel: int(info["size"]) for rel, info in sorted(rels.items()) if not rel.startswith(".tmp-")}


def problem_with(recorded: dict[str, int], listing: dict[str, int]) -> str | None:
    """The first difference between a folder's recorded and present files (relative name -> bytes), or None."""
    for rel in sorted(set(recorded) | set(listing)):
        if rel not in listing:
            return f"{rel}: missing"
        if rel not in recorded:
            return f"{rel}: not in the manifest (an extra file)"
        if recorded[rel] != listing[rel]:
            return f"{rel}: {listing[rel]} bytes, the manifest records {recorded[rel]}"
    return None


def file_digest(uri: str) -> str:
    """`store.file_digest`, remembered in this process while the file's size and mtime (or ETag) stay."""
    stamp = _stamp(uri)
    if stamp is not None and stamp in _seen:
        return _seen[stamp]
    digest = store.file_digest(uri)
    if stamp is not None and _stamp(uri) == stamp:  # unchanged while it was read
        _seen[stamp] = digest
    return digest


def _stamp(uri: str) -> tuple | None:
    """What changes when the file is rewritten: its inode, size and mtime (local), its ETag (s3://); None: unknown."""
    fs = store.fs_for(uri)
    try:
        if not remote.is_remote(uri):
            st = os.stat(fs._strip_protocol(uri))
            return (uri, st.st_ino, st.st_size, st.st_mtime_ns)
        fs.invalidate_cache(uri)
        info = store.retrying(uri, "stat", lambda: fs.info(uri))
    except (OSError, store.StoreError):
        return None
    return (uri, info.get("size"), info["ETag"]) if info.get("ETag") else None


def _problem(uri: str, digest: str | None, sizes: dict[str, int] | None, model_cache: str | None) -> str | None:
    if not store.exists(uri):
        return "missing"
    listing = folder_sizes(uri)
    if listing is None:
        if sizes is not None:
            return "a file, where the manifest records a folder"
        if digest is None:  # an earlier version recorded no digest for it: present is all that can be told
            return None
        got = file_digest(uri)
        return None if got == digest else f"content does not match its manifest (digest {got}, recorded {digest})"
    if not listing:
        return "missing (an empty folder)"
    if sizes is not None and (wrong := problem_with(sizes, listing)):
        return f"{store.join(uri, wrong)}"
    if remote.is_remote(uri) or digest is None:
        return None
    got = remote.cached_folder_digest(uri, model_cache)
    return None if got == digest else f"content does not match its manifest (digest {got}, recorded {digest})"
