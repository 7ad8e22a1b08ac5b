"""Reading benchmark files with errors that name the file and the line (``path: line 3: ...``)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from metareward.runstore import store


class EvalFileError(ValueError):
    """A benchmark file that cannot be read as its harness's format; the message names the file and line."""


def read_jsonl(path: str) -> list[tuple[int, dict]]:
    """(line number, object) for every non-blank line; a line that is not a JSON object is an error."""
    from metareward.inputs.jsonl import json_lines

    return json_lines(_text(path), path, EvalFileError)


def read_json_list(path: str) -> list[tuple[int, dict]]:
    """A JSON file holding a list of objects (alpaca_eval's format); 'line' is the list index + 1 there."""
    text = _text(path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise EvalFileError(f"{path}: line {e.lineno}: invalid JSON ({e.msg})") from None
    if not isinstance(data, list):
        raise EvalFileError(f"{path}: expected a JSON list of objects, got {type(data).__name__}")
    for i, obj in enumerate(data, start=1):
        if not isinstance(obj, dict):
            raise EvalFileError(f"{path}: entry {i}: expected a JSON object, got {type(obj).__name__}")
    return list(enumerate(data, start=1))


def need(obj: dict, key: str, path: str, lineno: int, kind: type | tuple[type, ...] | None = None,
         unit: str = "line") -> Any:
    """obj[key], or an EvalFileError naming the file, line (``unit="entry"`` in a JSON list) and the field."""
    if key not in obj:
        raise EvalFileError(f"{path}: {unit} {lineno}: missing field {key!r}")
    value = obj[key]
    if kind is not None and not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise EvalFileError(f"{path}: {unit} {lineno}: field {key!r} must be {names}, got {type(value).__name__}")
    return value


def write_jsonl(path: str, rows: list[dict]) -> str:
    """Rows in the key order given (the harnesses' files are read by humans too); returns the digest."""
    import hashlib

    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode()
    store.write_bytes(path, data)
    return hashlib.sha256(data).hexdigest()[:16]


def write_json(path: str, obj) -> str:
    import hashlib

    data = (json.dumps(obj, ensure_ascii=False, indent=2) + "\n").encode()
    store.write_bytes(path, data)
    return hashlib.sha256(data).hexdigest()[:16]


def iter_files(folder: str, suffix: str) -> Iterator[str]:
    """Files directly under a local folder ending in ``suffix``, sorted (FastChat sorts them too)."""
    yield from (str(p) for p in sorted(Path(folder).glob(f"*{suffix}")) if p.is_file())


def _text(path: str) -> str:
    if "://" not in path and not Path(path).is_file():
        raise EvalFileError(f"{path}: no such file")
    try:
        return store.read_text(path)
    except store.StoreError as e:
        raise EvalFileError(str(e)) from None
