"""What this machine has and does well, asked in one place: its GPUs (the ones this process may use, the host's
ids to share, vLLM's tensor-parallel size), its CPU cores, the precision it computes fast (the inference dtype,
training's bf16) and the local folder that caches model weights.

Why the precision asks the hardware: bf16 is only fast where the hardware has bf16 arithmetic; emulated, it made
the smoke recipe several times slower than fp32 (measured: bench/README.md, "Figures behind code choices"). So
``auto`` asks the CPU, the way vLLM's CPU backend falls back to fp32 without AVX512-BF16.

A top-level module: every subpackage may ask it. Pure Python at import: torch is imported inside the functions
that need it, so asking for GPU ids never fixes the visible devices before `metareward.pipeline.gpu_slots` claims
them.

    >>> visible_gpus({"CUDA_VISIBLE_DEVICES": "0,3"}), visible_gpus({"CUDA_VISIBLE_DEVICES": "-1"})
    (2, 0)
    >>> tensor_parallel_size(0, 8), tensor_parallel_size(2, 8), tensor_parallel_size(0, 0)
    (8, 2, 1)
"""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path

log = logging.getLogger(__name__)

GPUS_ENV = "METAREWARD_GPUS"  # the host's GPU ids, comma-separated (default: nvidia-smi's)
CACHE_ENV = "METAREWARD_CACHE"  # the folder holding the local model cache (default: ~/.cache/metareward)


# ----------------------------------------------------------------------------------------------- GPUs and cores


def visible_gpus(env: dict[str, str] | None = None) -> int:
    """GPUs this process may use: CUDA_VISIBLE_DEVICES when set, else what torch sees (0 without CUDA)."""
    env = os.environ if env is None else env
    if "CUDA_VISIBLE_DEVICES" in env:
        ids = [d for d in env["CUDA_VISIBLE_DEVICES"].split(",") if d.strip()]
        return 0 if ids[:1] == ["-1"] else len(ids)
    try:
        import torch
    except ImportError:
        return 0
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def host_gpus() -> list[int]:
    """The GPU ids to share out: METAREWARD_GPUS, else CUDA_VISIBLE_DEVICES, else nvidia-smi's list (none: []).
    No GPU library is imported."""
    given = os.environ.get(GPUS_ENV, os.environ.get("CUDA_VISIBLE_DEVICES"))
    if given is not None:
        return [int(g) for g in given.split(",") if g.strip().isdigit()]
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [int(g) for g in out.stdout.split() if g.isdigit()] if out.returncode == 0 else []


def tensor_parallel_size(configured: int, gpus: int) -> int:
    """vLLM's tensor_parallel_size: the configured value, or every GPU of the worker when it is 0."""
    return configured if configured > 0 else max(gpus, 1)


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity where the OS tells it, else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


# ----------------------------------------------------------------------------------------------- precision


def cpu_has_native_bf16() -> bool:
    """True where the CPU does bf16 arithmetic in hardware (AVX512-BF16 or AMX), as oneDNN sees it."""
    import torch

    cpu = torch.cpu
    for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        fn = getattr(cpu, probe, None)
        if fn is not None and fn():
            return True
    return False


def inference_dtype(requested: str, device_type: str) -> str:
    """The dtype the transformers engine loads weights in.

    ``auto``: on a CPU, bfloat16 where it is native and float32 elsewhere (a checkpoint's fp16 or bf16 would be
    emulated); on a GPU, ``auto`` as transformers reads it (the checkpoint's dtype). An explicit dtype is kept,
    with a warning when it is bf16 on a CPU that emulates it.
    """
    if requested == "auto":
        if device_type != "cpu":
            return "auto"
        return "bfloat16" if cpu_has_native_bf16() else "float32"
    if requested == "bfloat16" and device_type == "cpu" and not cpu_has_native_bf16():
        log.warning("dtype bfloat16 on a CPU without native bf16 (no AVX512-BF16 or AMX): it is emulated, "
                    "often several times slower than float32; 'auto' picks float32 here")
    return requested


def train_bf16(requested: bool | str, on_gpu: bool) -> bool:
    """Whether training autocasts to bf16: ``auto`` = where the device computes bf16 natively."""
    if requested == "auto":
        if on_gpu:
            import torch

            return bool(torch.cuda.is_bf16_supported())
        return cpu_has_native_bf16()
    return bool(requested)


# ----------------------------------------------------------------------------------------------- local cache


def model_cache_dir() -> Path:
    """This machine's model cache: ``$METAREWARD_CACHE/models``, by default ``~/.cache/metareward/models`` (the
    embedded model's converted copy, models pulled from an ``s3://`` store)."""
    return Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "metareward")) / "models"
