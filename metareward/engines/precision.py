"""Which precision to run in, from the config's ``auto`` and what the hardware computes natively.

Why: bf16 is only fast where the hardware has bf16 arithmetic. On this workplace's 2-core machines (same name,
"AMD EPYC", two different hosts) a 64 x 576 @ 576 x 1536 bf16 matmul took 94 ms on a host with AVX2 only and
the fp32 one 1.2 ms there, while on a host with AVX512-BF16 bf16 ran the engine 1.6x faster than fp32. The
smoke recipe's bf16, pinned, made a full ``make bench`` take 2 h 27 min and 65 min on the AVX2 host against 13 min
on the AVX512-BF16 one (DPO 157-183 s a step against 8.40; figures in bench/README.md). So ``auto`` asks the
hardware, the way vLLM's CPU backend falls back to fp32 without AVX512-BF16.

torch is imported inside the functions: importing this module stays cheap.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


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
