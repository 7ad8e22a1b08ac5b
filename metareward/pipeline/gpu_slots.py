"""GPU slots shared by the stage containers of one host: each claims its GPUs with a lock file per GPU.

Docker hands GPUs out to nobody in particular: a device request by count gives every container the same first
GPUs (NVIDIA/nvidia-container-toolkit#521). So the ``gpu`` pool's containers all get the host's GPUs, and a
stage process claims ``max(tensor_parallel_size, 1)`` of them here, before any engine starts: an exclusive
``fcntl.flock`` on ``<folder>/gpu<id>.lock`` in a host folder mounted into every container of that host
(``metareward-gpu-slots:/var/lock/metareward``, deployments/prefect.yaml), then ``CUDA_VISIBLE_DEVICES``. The
locks are held until the process exits (the kernel drops them even when it is killed), so a crashed stage frees
its GPUs at once. A process that finds too few free GPUs waits, holding none, so two claims never deadlock.

    METAREWARD_GPU_SLOTS=/var/lock/metareward     # set in the gpu pool's job variables; unset = no claim

Pure Python: no GPU library is imported (importing one could fix the visible devices before the claim).
"""

from __future__ import annotations

import fcntl
import logging
import os
import time
from pathlib import Path

from metareward.hardware import host_gpus  # the host's GPU ids (METAREWARD_GPUS, else CUDA_VISIBLE_DEVICES, ...)

ENV = "METAREWARD_GPU_SLOTS"  # the lock folder; unset = this process claims nothing

log = logging.getLogger("metareward")
_held: list[int] = []  # open lock files: closed by the process's exit, which releases them


def _try_lock(folder: Path, gpu: int) -> int | None:
    fd = os.open(folder / f"gpu{gpu}.lock", os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _try_claim(folder: Path, gpus: list[int], need: int) -> list[tuple[int, int]] | None:
    """``need`` free GPUs as (id, fd), or None with nothing held."""
    got: list[tuple[int, int]] = []
    for gpu in gpus:
        fd = _try_lock(folder, gpu)
        if fd is not None:
            got.append((gpu, fd))
            if len(got) == need:
                return got
    for _, fd in got:  # too few: hold none while waiting, so two partial claims never block each other
        os.close(fd)
    return None


def claim(need: int, folder: str | os.PathLike, gpus: list[int] | None = None, poll_s: float = 2.0,
          timeout_s: float | None = None) -> list[int]:
    """Claim ``need`` of ``gpus`` (default `host_gpus`) in ``folder``, waiting until that many are free; set
    CUDA_VISIBLE_DEVICES to them and hold them until this process exits. Returns the ids."""
    gpus = host_gpus() if gpus is None else gpus
    if need > len(gpus):
        raise RuntimeError(f"{need} GPUs wanted, {len(gpus)} on this host ({gpus})")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    start, told = time.monotonic(), False
    while (got := _try_claim(folder, gpus, need)) is None:
        if timeout_s is not None and time.monotonic() - start > timeout_s:
            raise TimeoutError(f"no {need} free GPUs of {gpus} in {folder} after {timeout_s:.0f} s")
        if not told:
            log.info("waiting for %d free GPU(s) of %s (%s)", need, gpus, folder)
            told = True
        time.sleep(poll_s)
    _held.extend(fd for _, fd in got)
    ids = [gpu for gpu, _ in got]
    os.environ["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, ids))
    log.info("GPU slots claimed: %s (waited %.0f s)", ids, time.monotonic() - start)
    return ids


def claim_from_env(tensor_parallel_size: int) -> list[int] | None:
    """`claim` ``tensor_parallel_size`` GPUs (0: every GPU of the host, one engine) when METAREWARD_GPU_SLOTS
    names the lock folder, else None. A second call in the same process claims nothing more."""
    folder = os.environ.get(ENV)
    if not folder or _held:
        return None
    gpus = host_gpus()
    return claim(tensor_parallel_size if tensor_parallel_size > 0 else max(len(gpus), 1), folder, gpus)
