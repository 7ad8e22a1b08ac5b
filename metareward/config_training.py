"""The training sections of the config: DPO (``dpo.*``, each iteration's train stage) and SFT (``eft.sft.*``, the
EFT stage that makes M_0). Part of `metareward.config` (which re-exports both), kept apart as TRL keeps its
DPOConfig apart.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from metareward.config_base import Section as _Section


class DPOSection(_Section):
    beta: float = Field(0.1, gt=0.0, description="DPO beta (paper: 0.1).")
    learning_rate: float = Field(5e-6, gt=0.0, description="Peak learning rate (paper: 5e-6).")
    lr_scheduler_type: str = Field("cosine", description="transformers scheduler name (paper: cosine).")
    per_device_batch_size: int = Field(2, ge=1, description="Pairs per process per forward pass.")
    global_batch_size: int = Field(
        32, ge=1, description="Pairs per optimizer step over all processes (paper: 32), whatever the GPU count: "
        "gradient accumulation is derived at launch, global / (per_device_batch_size x processes), and must divide. "
        "A recipe's old `gradient_accumulation_steps: A` alone still reads as global = per-device x A.")
    num_epochs: float = Field(1.0, gt=0.0, description="Epochs over the pairs.")
    max_steps: int = Field(-1, description="Stop after this many optimizer steps (-1 = epochs decide).")
    max_length: int = Field(1024, ge=16, description="Truncate prompt+completion to this many tokens.")
    bf16: bool | Literal["auto"] = Field(
        False, description="bf16 autocast in training; 'auto' = where the device computes bf16 natively (a GPU "
        "with bf16, a CPU with AVX512-BF16 or AMX).")
    gradient_checkpointing: bool = Field(False, description="Trade compute for memory.")
    precompute_ref_logps: bool = Field(
        True, description="Compute the reference model's log-probs of every pair once, before training, and keep "
        "them beside the pairs: reruns (another beta, a resumed training) reuse them, and the reference model is "
        "not held in memory while training.")
    warmup_ratio: float = Field(0.0, ge=0.0, lt=1.0, description="Share of steps used for warm-up.")
    lora_r: int = Field(0, ge=0, description="LoRA rank through peft (0 = full fine-tuning): the one-GPU option for "
                        "models whose full DPO does not fit; the adapter is merged into the saved model.")
    lora_alpha: int = Field(16, ge=1, description="LoRA scaling alpha (with lora_r > 0).")
    distributed: Literal["fsdp", "zero3", "ddp"] = Field(
        "fsdp", description="On a worker with several GPUs: train through `accelerate launch` with the shipped FSDP, "
        "DeepSpeed ZeRO-3 or DDP config (metareward/configs/accelerate/), one process per GPU (ddp: a full model per "
        "process; also runs on CPU processes, gloo).")

    @model_validator(mode="before")
    @classmethod
    def _legacy_accumulation(cls, data: Any) -> Any:
        """Recipes written before global_batch_size meant global = per-device x accumulation (on one device)."""
        if not isinstance(data, dict) or "gradient_accumulation_steps" not in data:
            return data
        data = dict(data)
        accumulation = data.pop("gradient_accumulation_steps")
        if "global_batch_size" in data:
            raise ValueError("set dpo.global_batch_size only: dpo.gradient_accumulation_steps is derived from it "
                             "(global / (per_device_batch_size x processes))")
        data["global_batch_size"] = int(accumulation) * int(data.get("per_device_batch_size", 2))
        return data

    @model_validator(mode="after")
    def _global_batch_divides(self) -> DPOSection:
        self.accumulation_steps(1)
        return self

    def accumulation_steps(self, processes: int) -> int:
        """Gradient accumulation that keeps ``global_batch_size`` on ``processes`` processes, or a ValueError that
        names the fields."""
        per_step = self.per_device_batch_size * processes
        if self.global_batch_size % per_step:
            raise ValueError(
                f"dpo.global_batch_size={self.global_batch_size} is not a multiple of dpo.per_device_batch_size="
                f"{self.per_device_batch_size} x {processes} process(es) = {per_step}: change one of them")
        return self.global_batch_size // per_step


class SFTSection(_Section):
    learning_rate: float = Field(5.5e-6, gt=0.0, description="Peak learning rate (Self-Rewarding SFT: 5.5e-6).")
    lr_scheduler_type: str = Field("cosine", description="transformers scheduler name (Self-Rewarding: cosine).")
    per_device_batch_size: int = Field(2, ge=1, description="Examples per device per step.")
    gradient_accumulation_steps: int = Field(8, ge=1, description="Global batch = this x per-device x devices "
                                             "(Self-Rewarding: 16).")
    num_epochs: float = Field(1.0, gt=0.0, description="Epochs over the EFT examples.")
    max_steps: int = Field(-1, description="Stop after this many optimizer steps (-1 = epochs decide).")
    max_length: int = Field(1024, ge=16, description="Truncate judge prompt + judgment to this many tokens.")
    bf16: bool | Literal["auto"] = Field(
        False, description="bf16 autocast in training; 'auto' = where the device computes bf16 natively (a GPU "
        "with bf16, a CPU with AVX512-BF16 or AMX).")
    gradient_checkpointing: bool = Field(False, description="Trade compute for memory.")
    warmup_ratio: float = Field(0.0, ge=0.0, lt=1.0, description="Share of steps used for warm-up.")
