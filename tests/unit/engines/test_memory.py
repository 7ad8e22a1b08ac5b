"""metareward/engines/memory.py: glibc's heap kept for reuse while decoding, and trimmed before a generate call."""

import gc
import sys
import weakref

import pytest

from metareward.engines import memory

class Holder:
    def __init__(self, buffers):
        self.buffers = buffers


linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt and malloc_trim")


@linux_only
def test_keep_freed_memory_sets_glibc_thresholds():
    assert memory.keep_freed_memory() is True  # setting them again is harmless


@linux_only
def test_release_hands_back_what_a_reference_cycle_held():
    memory.keep_freed_memory()  # freed buffers under 32 MiB now stay in the heap instead of being unmapped
    memory.release_freed_memory()  # start from a trimmed heap
    gc.disable()  # so only release_freed_memory's own collection can free the cycle
    try:
        cycle = Holder([bytearray(4 << 20) for _ in range(16)])  # 64 MiB in heap chunks
        cycle.me = cycle
        alive = weakref.ref(cycle)
        del cycle
        assert alive() is not None  # the cycle holds it: no collection has run
        assert memory.release_freed_memory() is True  # collected, then its 64 MiB handed back to the OS
        assert alive() is None
    finally:
        gc.enable()


def test_elsewhere_both_are_no_ops(monkeypatch):
    monkeypatch.setattr(memory.sys, "platform", "darwin")
    assert memory.keep_freed_memory() is False and memory.release_freed_memory() is False
