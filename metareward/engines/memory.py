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
    so each forward pass page-faults its activations in again. The prefill of the bench's 96 meta-judge prompts
    (fresh process, 2 cores) took 1.7-2.6M minor faults, 3.4-5.4 s of system time and 26-29 s; with the threshold
    at glibc's ceiling (32 MiB), trimming from 1 GiB of free heap, and forward passes whose activations stay under
    it (`metareward.engines.decoding.chunk_tokens`): 0.32-0.38M faults, 0.8-0.9 s and 24-25 s. This is the
    effect that jemalloc or tcmalloc (which Intel recommends for PyTorch on CPU) get through LD_PRELOAD, without a
    library to install. Process-wide: call it in the engine's own process.
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
    its own pattern of free chunks, and our decode loop then ran slower on it, call after call. Measured on the
    AVX2-only AMD host (2 cores, fp32, 2026-12-04; the bench's 64-row generate stage): 233-243 tok/s in a fresh
    process, 206 after three prompts of HF ``generate`` had run in it (again 207 on the next call), 236 after a
    ``malloc_trim(0)``. In a process where only our loop ran the trim costs a little, as the call faults its
    buffers in afresh: the bench's meta-judge stage, A/B in one process (trim, none, none, trim): 84.6 and 83.5
    tok/s against 86.7 and 84.2. A run's process does more than decode between calls (the train stage, the
    benchmark's scoring), so it trims.
    """
    libc = _libc()
    if libc is None:
        return False
    gc.collect()  # first free what reference cycles still hold (a trim alone gave 213 there, with this 241)
    return bool(libc.malloc_trim(0))
