"""glibc's heap, tuned for the CPU engine: freed activation buffers kept for reuse while a batch decodes
(`keep_freed_memory`), and the heap trimmed before each generate call (`release_freed_memory`).

Without torch; on other platforms or C libraries both are no-ops returning False.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import sys


def _libc():
    """glibc, or None (not Linux, or a C library without mallopt/malloc_trim, e.g. musl)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt, libc.malloc_trim  # noqa: B018 (both must exist)
    except (OSError, AttributeError):
        return None
    return libc


def keep_freed_memory() -> bool:
    """Let glibc reuse freed buffers up to 32 MiB instead of unmapping them (on Linux with glibc; elsewhere a
    no-op, returning False).

    By default glibc maps every buffer above a threshold that starts at 128 KiB with mmap and unmaps it on free,
    so each forward pass page-faults its activations in again. With the threshold at glibc's ceiling (32 MiB),
    trimming from 1 GiB of free heap, and forward passes whose activations stay under it
    (`metareward.engines.decoding.chunk_tokens`), the prefill faults a fraction as often and runs faster (measured:
    bench/README.md, "Figures behind code choices"). This is the effect that jemalloc or tcmalloc (which Intel
    recommends for PyTorch on CPU) get through LD_PRELOAD, without a library to install. Process-wide: call it in
    the engine's own process.
    """
    libc = _libc()
    if libc is None:
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's <malloc.h>
    return bool(libc.mallopt(m_mmap_threshold, 32 << 20)) and bool(libc.mallopt(m_trim_threshold, 1 << 30))


def release_freed_memory() -> bool:
    """Hand the heap's free memory back to the OS (glibc's ``malloc_trim(0)``), before a generate call; whether any
    was handed back.

    Why: with freed buffers kept (`keep_freed_memory`), what ran before in the process leaves the heap holding
    its own pattern of free chunks, and our decode loop then ran slower on it, call after call; a trim gave the
    fresh process's speed back. In a process where only our loop ran the trim costs a little, as the call faults
    its buffers in afresh (measured: bench/README.md, "Figures behind code choices"). A run's process does more
    than decode between calls (the train stage, the benchmark's scoring), so it trims.
    """
    libc = _libc()
    if libc is None:
        return False
    gc.collect()  # first free what reference cycles still hold (a trim alone gave back less: bench/README.md)
    return bool(libc.malloc_trim(0))
