"""Secrets never reach logs, manifests or reports: the values of secret-looking environment variables are masked.

A variable is secret when its name ends in KEY, TOKEN, PASSWORD, PASSWD, SECRET or CREDENTIAL(S) (after ``_``
or alone), or contains SECRET: ``OPENAI_API_KEY``, ``HF_TOKEN``, ``AWS_SECRET_ACCESS_KEY``,
``PREFECT_API_KEY``. ``TOKENIZERS_PARALLELISM`` is not, nor are identifiers such as ``AWS_ACCESS_KEY_ID`` (a key's
public half, often a plain word such as a bucket's name: masking it would corrupt URIs in manifests). Values shorter than 8 characters are left alone (they
would mask ordinary words such as ``false``)::

    >>> redact("key=sk-live-123456", {"OPENAI_API_KEY": "sk-live-123456"})
    'key=***'

`install()` masks every log record this process creates (Prefect's API log handler included), by wrapping the
log record factory; the run store masks manifests and reports it writes (`redact_obj`).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping

MASK = "***"
MIN_LENGTH = 8
_NAME = re.compile(r"(^|_)(API_?KEY|KEY|TOKEN|PASSWORD|PASSWD|SECRET|CREDENTIALS?)$|SECRET", re.I)


def is_secret_name(name: str) -> bool:
    return bool(_NAME.search(name))


def secret_values(env: Mapping[str, str] | None = None) -> list[str]:
    """The values to mask, longest first (so a secret containing another is masked whole)."""
    env = os.environ if env is None else env
    return sorted({v for k, v in env.items() if is_secret_name(k) and len(v) >= MIN_LENGTH}, key=len, reverse=True)


def redact(text: str, env: Mapping[str, str] | None = None) -> str:
    for value in secret_values(env):
        text = text.replace(value, MASK)
    return text


def redact_obj(obj, env: Mapping[str, str] | None = None):
    """A JSON-like value with every string redacted (keys included)."""
    values = secret_values(env)
    if not values:
        return obj

    def walk(x):
        if isinstance(x, str):
            for v in values:
                x = x.replace(v, MASK)
            return x
        if isinstance(x, dict):
            return {walk(k): walk(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [walk(v) for v in x]
        return x

    return walk(obj)


def _redact_record(record: logging.LogRecord) -> None:
    try:
        message = record.getMessage()
    except Exception:  # noqa: BLE001  (a bad format string: leave it to the handler to report)
        return
    clean = redact(message)
    if clean != message:
        record.msg, record.args = clean, ()
    if record.exc_info and record.exc_info[1] is not None and secret_values():
        record.exc_text = redact(logging.Formatter().formatException(record.exc_info))


_installed = False


def install() -> None:
    """Mask secrets in every log record created from now on in this process (idempotent)."""
    global _installed
    if _installed:
        return
    factory = logging.getLogRecordFactory()

    def redacting_factory(*args, **kwargs):
        record = factory(*args, **kwargs)
        _redact_record(record)
        return record

    logging.setLogRecordFactory(redacting_factory)
    _installed = True
