"""metareward.registry: its examples (the sharded stages, what a stage reads, which modules a key digests)."""

import doctest

from metareward import registry


def test_doctests():
    result = doctest.testmod(registry)
    assert result.attempted > 0 and result.failed == 0
