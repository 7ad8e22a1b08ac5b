"""Supervised fine-tuning through TRL's `SFTTrainer`: the EFT step that turns the seed model into M_0.

Like `metareward.training.dpo.train_dpo`: conversational prompt-completion rows (so TRL computes the loss on the
completion tokens only, as Self-Rewarding's SFT did), every `SFTConfig` field that matters set explicitly,
the final model saved as safetensors with its tokenizer, statistics returned as plain JSON. Heavy imports
stay inside the function.

    from metareward.training.sft import train_sft
    stats = train_sft(rows, "/models/seed", "/tmp/m0-eft", cfg.eft.sft, seed=0)
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

    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from metareward.training.dpo import _jsonable_logs, trainer_args

    rows = list(rows)
    random.Random(seed).shuffle(rows)
    scratch = tempfile.mkdtemp(prefix="metareward-sft-")
    try:
        args = SFTConfig(
            **trainer_args(SFTConfig, sft, output_dir=scratch, dtype=dtype, trust_remote_code=trust_remote_code,
                           seed=seed),
            completion_only_loss=True,  # loss on the judgment tokens only
            packing=False,
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
