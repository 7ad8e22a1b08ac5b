"""Secret masking (the log, manifest and report cases are in tests/test_security.py)."""

import doctest

from metareward.runstore import redact


def test_doctests():
    result = doctest.testmod(redact)
    assert result.attempted > 0 and result.failed == 0
