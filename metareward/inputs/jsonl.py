"""JSON Lines input files, read the same way everywhere: blank lines skipped, and every error a one-line message
naming the file and the line, raised as the caller's own error class (so the CLI prints it without a trace)."""

from __future__ import annotations

import json
from typing import Any


def json_lines(text: str, where: str, error: type[Exception], objects: bool = True) -> list[tuple[int, Any]]:
    """(line number, parsed value) for every non-blank line of ``text``; ``objects``: each must be a JSON object."""
    rows = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as e:
            raise error(f"{where}: line {lineno}: invalid JSON ({e.msg})") from None
        if objects and not isinstance(value, dict):
            raise error(f"{where}: line {lineno}: expected a JSON object, got {type(value).__name__}")
        rows.append((lineno, value))
    return rows
