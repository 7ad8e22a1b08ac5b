"""Faults a stage can hit that the user can fix with a setting: out of memory, in an engine or in training.

`execute` (metareward/pipeline/contract.py) turns one into a StageError that names the stage and the settings to lower::

    generate iter 1: out of memory (CUDA out of memory. Tried to allocate 2.00 GiB ...); lower
    engine.batch_size (now 128) or engine.shard_size (now 128)

Nothing is imported from torch or vLLM: errors are recognised by class name and message.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from metareward.config import RunConfig

_OOM_CLASSES = {"OutOfMemoryError", "MemoryError"}  # torch.OutOfMemoryError (CUDA), Python's MemoryError
_OOM_TEXT = ("out of memory", "cuda error: out of memory", "no available memory for the cache blocks",
             "insufficient memory", "not enough memory", "defaultcpuallocator: can't allocate memory")


def is_oom(e: BaseException) -> bool:
    """torch.OutOfMemoryError, MemoryError, or a RuntimeError/ValueError whose message says memory ran out."""
    if any(c.__name__ in _OOM_CLASSES for c in type(e).__mro__):
        return True
    text = str(e).lower()
    return isinstance(e, (RuntimeError, ValueError)) and any(t in text for t in _OOM_TEXT)


def oom_advice(stage: str, cfg: RunConfig) -> str:
    """The settings that lower this stage's peak memory, with their current values."""
    if stage == "train":
        d = cfg.dpo
        tips = [f"dpo.per_device_batch_size (now {d.per_device_batch_size}; accumulation grows to keep "
                f"dpo.global_batch_size={d.global_batch_size})", f"dpo.max_length (now {d.max_length})"]
        if not d.gradient_checkpointing:
            tips.append("or set dpo.gradient_checkpointing=true")
        return "lower " + ", ".join(tips)
    if stage == "eft":
        s = cfg.eft.sft
        return (f"lower eft.sft.per_device_batch_size (now {s.per_device_batch_size}) or eft.sft.max_length "
                f"(now {s.max_length}), or lower engine.batch_size (now {cfg.engine.batch_size}) if it failed while "
                "judging")
    e = cfg.engine
    if e.backend == "vllm":
        return (f"lower engine.max_model_len (now {e.max_model_len}) or engine.gpu_memory_utilization (now "
                f"{e.gpu_memory_utilization}), or raise engine.tensor_parallel_size (now {e.tensor_parallel_size})")
    return f"lower engine.batch_size (now {e.batch_size}) or engine.shard_size (now {e.shard_size})"


def oom_message(stage: str, t: int, cfg: RunConfig, e: BaseException) -> str:
    first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
    return f"{stage} iter {t}: out of memory ({first}); {oom_advice(stage, cfg)}"
