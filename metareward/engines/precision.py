"""Which precision (and which decode loop) to run, from the config's ``auto`` and what the hardware does best.

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


# Why 'auto' picks each decode loop, as measured (bench/README.md), logged when an engine opens.
_DECODER_WHY = {
    "cpu": "ours measured 1.8-5.8x batched HF generate per stage on the CPU host classes benched with it "
           "(Intel AMX bf16, AMD AVX2 fp32; bench/README.md)",
    "cuda": "HF generate measured faster on a GPU (H200: 10.1k against 7.1k tok/s): a full-vocabulary sort is "
            "cheap there and our loop's host syncs stall it",
}


def own_decoder(decoder: str, device_type: str) -> bool:
    """Whether to decode with our own loop: 'own' or 'generate' as asked; 'auto' takes the one measured faster on
    this kind of device (ours on a CPU, HF generate elsewhere) and logs why.

    >>> own_decoder("auto", "cpu"), own_decoder("auto", "cuda"), own_decoder("generate", "cpu")
    (True, False, False)
    """
    if decoder not in ("auto", "own", "generate"):
        raise ValueError(f"decoder must be auto, own or generate, got {decoder!r}")
    if decoder != "auto":
        return decoder == "own"
    mine = device_type == "cpu"
    log.info("decoder auto -> %s on %s: %s", "own" if mine else "generate", device_type,
             _DECODER_WHY.get(device_type, _DECODER_WHY["cuda"]))
    return mine
