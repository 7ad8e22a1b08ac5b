"""Supervised fine-tuning through TRL's `SFTTrainer`: the EFT step that turns the seed model into M_0.

Like `metareward.train.train_dpo`: conversational prompt-completion rows (so TRL computes the loss on the
completion tokens only, as Self-Rewarding's SFT did), every `SFTConfig` field that matters set explicitly,
the final model saved as safetensors with its tokenizer, statistics returned as plain JSON. Heavy imports
stay inside the function.

    from metareward.sft import train_sft
    stats = train_sft(rows, "/models/seed", "/runs/x/iter_0/eft/model", cfg.eft.sft, seed=0)
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import tempfile
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from metareward.config import SFTSection


def train_sft(
    rows: list[dict],
    model_path: str,
    output_dir: str,
    sft: SFTSection,
    *,
    trust_remote_code: bool = False,
    dtype: str = "float32",
    seed: int = 0,
) -> dict:
    """SFT ``model_path`` on prompt-completion ``rows`` (shuffled with ``seed``) and save it to ``output_dir``.

    Returns ``steps``, ``train_loss``, ``final_loss``, ``sec_per_step``, ``n_examples`` and ``log_history``.
    """
    if not rows:
        raise ValueError("train_sft: no examples to train on")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

    import torch
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from metareward.train import _jsonable_logs

    rows = list(rows)
    random.Random(seed).shuffle(rows)
    scratch = tempfile.mkdtemp(prefix="metareward-sft-")
    try:
        on_gpu = torch.cuda.is_available()
        # same reason as train.py: transformers 5 reads activation_checkpointing when the config has it
        ckpt_name = ("activation_checkpointing" if "activation_checkpointing" in SFTConfig.__dataclass_fields__
                     else "gradient_checkpointing")
        # SFTConfig's defaults differ from TrainingArguments' (bf16 on, gradient checkpointing on, lr 2e-5,
        # logging every 10 steps): set every one that matters.
        args = SFTConfig(
            output_dir=scratch,
            model_init_kwargs={"dtype": dtype},
            trust_remote_code=trust_remote_code,
            max_length=sft.max_length,
            completion_only_loss=True,  # loss on the judgment tokens only
            packing=False,
            learning_rate=sft.learning_rate,
            lr_scheduler_type=sft.lr_scheduler_type,
            warmup_steps=sft.warmup_ratio,  # transformers 5: a float below 1 is a ratio of the total steps
            per_device_train_batch_size=sft.per_device_batch_size,
            gradient_accumulation_steps=sft.gradient_accumulation_steps,
            num_train_epochs=sft.num_epochs,
            max_steps=sft.max_steps,
            bf16=sft.bf16,
            fp16=False,
            **{ckpt_name: sft.gradient_checkpointing},
            seed=seed,
            use_cpu=not on_gpu,
            dataloader_num_workers=0,
            dataloader_pin_memory=on_gpu,
            dataset_num_proc=None,
            logging_steps=1,
            save_strategy="no",
            report_to="none",
        )
        tokenizer = AutoTokenizer.from_pretrained(model_path, trust_remote_code=trust_remote_code)
        trainer = SFTTrainer(model=model_path, args=args, train_dataset=Dataset.from_list(rows),
                             processing_class=tokenizer)
        result = trainer.train()
        trainer.model.config.use_cache = True  # saved for generation (Trainer turned the cache off)
        trainer.save_model(output_dir)
        with contextlib.suppress(FileNotFoundError):  # pickled args hold the scratch path: keep the digest stable
            os.remove(os.path.join(output_dir, "training_args.bin"))
        if hasattr(trainer, "end"):
            trainer.end()
        steps = int(trainer.state.global_step)
        log_history = _jsonable_logs(trainer.state.log_history)
        runtime = float(result.metrics.get("train_runtime", 0.0))
        losses = [e["loss"] for e in log_history if e.get("loss") is not None]
        stats: dict[str, Any] = {
            "steps": steps, "train_loss": float(result.training_loss), "final_loss": losses[-1] if losses else None,
            "train_runtime": runtime, "sec_per_step": runtime / steps if steps else None, "n_examples": len(rows),
            "epochs": float(trainer.state.epoch or 0.0), "log_history": log_history,
        }
        del trainer
        import gc

        gc.collect()
        return stats
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
