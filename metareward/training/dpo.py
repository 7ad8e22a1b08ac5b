"""DPO training of M_t on the union of its actor and judge preference pairs (method.md section 5).

One straight-line function in the style of TRL's ``scripts/dpo.py``: build the conversational preference dataset,
configure `DPOConfig` explicitly, let `DPOTrainer` load the policy and its frozen reference copy from the same
folder, train, save the final model and tokenizer, and return the training statistics.

Heavy libraries (torch, transformers, trl, datasets) are imported inside the function only, so importing this module
stays cheap for the orchestration code.
"""

from __future__ import annotations

import math
import os
import random
import shutil
import tempfile
from typing import TYPE_CHECKING, Any

from metareward.training.checkpoint import checkpoint_dtype, save_in_dtype

if TYPE_CHECKING:
    from metareward.config import DPOSection
    from metareward.records import PreferencePair

# Per-step metrics DPOTrainer logs whose last value is returned as ``final_<name>`` (slashes become underscores).
FINAL_METRICS = ("loss", "rewards/accuracies", "rewards/margins", "rewards/chosen", "rewards/rejected", "grad_norm")


def preference_rows(pairs: list[PreferencePair], seed: int = 0) -> list[dict]:
    """Pairs as TRL's conversational preference rows (prompt / chosen / rejected message lists), shuffled with
    ``seed`` so actor and judge pairs are mixed."""
    rows = [
        {
            "prompt": [{"role": "user", "content": p.prompt}],
            "chosen": [{"role": "assistant", "content": p.chosen}],
            "rejected": [{"role": "assistant", "content": p.rejected}],
        }
        for p in pairs
    ]
    random.Random(seed).shuffle(rows)
    return rows


def trainer_args(config_cls, section, *, output_dir: str, dtype: str, trust_remote_code: bool, seed: int) -> dict:
    """The TrainingArguments fields DPO and SFT set alike, from a DPOSection or SFTSection.

    Every field that matters is set rather than inherited: TRL's configs default otherwise than TrainingArguments
    (bf16 on, gradient checkpointing on, their own learning rates, logging every 10 steps).
    """
    import torch

    from metareward.hardware import train_bf16

    on_gpu = torch.cuda.is_available()
    # Recent transformers 5 renamed gradient_checkpointing to activation_checkpointing (the old name warns and is
    # used only while the new one is unset); TRL defaults the old name to True, so set the name this version reads.
    ckpt = ("activation_checkpointing" if "activation_checkpointing" in config_cls.__dataclass_fields__
            else "gradient_checkpointing")
    return dict(
        output_dir=output_dir,
        # model loading (for DPO: the policy, and the reference copy DPOTrainer builds from the same path)
        model_init_kwargs={"dtype": dtype},
        trust_remote_code=trust_remote_code,
        max_length=section.max_length,
        # optimisation
        learning_rate=section.learning_rate,
        lr_scheduler_type=section.lr_scheduler_type,
        warmup_steps=section.warmup_ratio,  # transformers 5: a float below 1 is a ratio of the total steps
        per_device_train_batch_size=section.per_device_batch_size,
        gradient_accumulation_steps=accumulation_steps(section),
        num_train_epochs=section.num_epochs,
        max_steps=section.max_steps,
        bf16=train_bf16(section.bf16, on_gpu),
        fp16=False,
        **{ckpt: section.gradient_checkpointing and not fsdp_checkpoints_activations()},
        seed=seed,
        # device and data loading
        use_cpu=not on_gpu,
        dataloader_num_workers=0,
        dataloader_pin_memory=on_gpu,
        dataset_num_proc=None,
        # bookkeeping: log every step, never checkpoint, no trackers
        logging_steps=1,
        save_strategy="no",
        report_to="none",
    )


def world_size() -> int:
    """Processes training together: accelerate launch (torchrun) sets WORLD_SIZE in each; 1 outside it."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def fsdp_checkpoints_activations(env=None) -> bool:
    """Whether this process runs under FSDP with FSDP's own activation checkpointing (accelerate launch's
    --fsdp_activation_checkpointing): then the trainer's flag stays off (transformers: a redundant all-gather)."""
    env = os.environ if env is None else env
    return env.get("ACCELERATE_USE_FSDP") == "true" and env.get("FSDP_ACTIVATION_CHECKPOINTING") == "true"


def accumulation_steps(section) -> int:
    """DPO derives it from its global batch and this launch's process count; SFT states it."""
    if hasattr(section, "global_batch_size"):
        return section.accumulation_steps(world_size())
    return section.gradient_accumulation_steps


def rows_seen(n_rows: int, dpo: DPOSection) -> int:
    """How many pairs training reads: all of them, unless ``max_steps`` stops it first (steps x global batch,
    whatever the process count)."""
    if dpo.max_steps is None or dpo.max_steps < 0:
        return n_rows
    return min(n_rows, dpo.max_steps * dpo.global_batch_size)


def _jsonable_logs(log_history: list[dict]) -> list[dict]:
    """Trainer log entries with numbers only, as plain floats; NaN/inf become None so strict JSON accepts them."""
    out = []
    for entry in log_history:
        clean: dict[str, float | None] = {}
        for key, value in entry.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                try:  # 0-d tensors / numpy scalars
                    value = value.item()
                except AttributeError:
                    continue
                if not isinstance(value, (int, float)) or isinstance(value, bool):
                    continue
            value = float(value)
            clean[key] = value if math.isfinite(value) else None
        out.append(clean)
    return out


def train_dpo(
    pairs: list[PreferencePair],
    model_path: str,
    output_dir: str,
    dpo: DPOSection,
    *,
    trust_remote_code: bool = False,
    dtype: str = "float32",
    seed: int = 0,
    work_dir: str | None = None,
    ref_logps_uri: str | None = None,
) -> dict:
    """Train ``model_path`` with DPO on ``pairs`` (reference = a frozen copy of ``model_path``) and save the result,
    weights (safetensors) and tokenizer, to ``output_dir``.

    ``ref_logps_uri``: with ``dpo.precompute_ref_logps``, where the reference log-probs of every pair are kept
    (JSON): read back when they match (same tokens, reference weights and truncation), else computed once and
    written there, so a rerun with another beta or learning rate, or a resumed training, skips that pass.

    ``work_dir`` is the trainer's scratch folder (its ``output_dir``; nothing is checkpointed there); None uses a
    temporary folder that is removed afterwards. Returns JSON-serializable statistics: ``steps``, ``train_loss``,
    ``final_loss`` / ``final_rewards_accuracies`` / ``final_rewards_margins`` / ... (the last logged value of each),
    ``sec_per_step``, ``phase_seconds`` ({setup, train, save}: wall seconds), ``n_pairs``, ``n_pairs_used`` (after
    TRL drops pairs whose prompt alone fills ``max_length``) and the full ``log_history``.
    """
    if not pairs:
        raise ValueError("train_dpo: no preference pairs to train on (0 actor and 0 judge pairs)")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    scratch = work_dir or tempfile.mkdtemp(prefix="metareward-dpo-")
    clock = PhaseClock()
    try:
        dataset = dpo_dataset(pairs, dpo, seed)
        args = dpo_config(dpo, scratch, dtype=dtype, trust_remote_code=trust_remote_code, seed=seed)
        trainer = dpo_trainer(model_path, args, dataset, dpo, trust_remote_code=trust_remote_code,
                              ref_logps_uri=ref_logps_uri)
        clock.lap("setup")
        n_used = len(trainer.train_dataset)
        if n_used == 0:
            raise ValueError(
                f"train_dpo: all {len(pairs)} pairs were dropped because their prompt alone fills "
                f"dpo.max_length={dpo.max_length} tokens; raise dpo.max_length"
            )
        result = trainer.train()
        clock.lap("train")
        saved = save_policy(trainer, output_dir, merge_lora=dpo.lora_r > 0, dtype=checkpoint_dtype(model_path))
        clock.lap("save")
        stats = train_stats(trainer, result, pairs, n_used=n_used, n_offered=len(dataset), dpo=dpo)
        stats.update(saved or {}, phase_seconds=clock.laps)
        trainer.accelerator.wait_for_everyone()
        if world_size() > 1:  # accelerate's processes end with os._exit (launch._train_main), no teardown here
            return stats
        if hasattr(trainer, "end"):  # transformers >= 5.18: finish trackers / process group
            trainer.end()
        del trainer
        import gc

        gc.collect()
        return stats
    finally:
        if work_dir is None:
            shutil.rmtree(scratch, ignore_errors=True)


class PhaseClock:
    """Wall seconds of each phase of a training, so a train stage's statistics say where its time went: ``setup``
    (imports, tokenising, the model load(s) and the reference pass when it is precomputed), ``train`` (the steps)
    and ``save``. The steps alone are TRL's ``train_runtime``; a bare DPOTrainer pays its reference forwards inside
    the steps instead (bench/README.md compares the two)."""

    def __init__(self):
        import time

        self._now = time.perf_counter
        self._last = self._now()
        self.laps: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = self._now()
        self.laps[name] = round(now - self._last, 2)
        self._last = now


def dpo_dataset(pairs: list[PreferencePair], dpo: DPOSection, seed: int):
    """The pairs as TRL's prompt/chosen/rejected rows, a seeded shuffle; with ``max_steps``, only the rows training
    will see (`rows_seen`), so the reference pass is not spent on pairs no step reads."""
    from datasets import Dataset

    rows = preference_rows(pairs, seed)
    return Dataset.from_list(rows[:rows_seen(len(rows), dpo)])


def dpo_config(dpo: DPOSection, scratch: str, *, dtype: str, trust_remote_code: bool, seed: int):
    """TRL's DPOConfig from the ``dpo`` section: the shared trainer arguments, beta, the sigmoid loss, and whether
    the reference log-probs are computed once before training."""
    from trl import DPOConfig

    return DPOConfig(
        **trainer_args(DPOConfig, dpo, output_dir=scratch, dtype=dtype, trust_remote_code=trust_remote_code, seed=seed),
        beta=dpo.beta,
        loss_type=["sigmoid"],
        precompute_ref_log_probs=dpo.precompute_ref_logps,
    )


def dpo_trainer(model_path: str, args, dataset, dpo: DPOSection, *, trust_remote_code: bool,
                ref_logps_uri: str | None):
    """The DPOTrainer on ``model_path`` (the reference: a frozen copy from the same path, or the base with the LoRA
    adapter off), storing its reference log-probs at ``ref_logps_uri`` when given, reporting progress."""
    from transformers import AutoTokenizer
    from trl import DPOTrainer

    tokenizer = AutoTokenizer.from_pretrained(model_path, trust_remote_code=trust_remote_code)
    trainer_cls, extra = DPOTrainer, {}
    if dpo.precompute_ref_logps and ref_logps_uri is not None:
        from metareward.training.ref_logps import stored_ref_trainer

        trainer_cls, extra = stored_ref_trainer(DPOTrainer), {"ref_logps_uri": ref_logps_uri}
    if dpo.lora_r > 0:  # one-GPU option: a LoRA adapter (the reference is the base with the adapter off)
        from peft import LoraConfig

        extra["peft_config"] = LoraConfig(r=dpo.lora_r, lora_alpha=dpo.lora_alpha, target_modules="all-linear",
                                          task_type="CAUSAL_LM")
    trainer = trainer_cls(
        **extra,
        model=model_path,
        ref_model=None,  # DPOTrainer loads a frozen copy from the policy's own path
        args=args,
        train_dataset=dataset,
        processing_class=tokenizer,
    )
    trainer.add_callback(_progress_callback())
    return trainer


def save_policy(trainer, output_dir: str, *, merge_lora: bool, dtype: str) -> dict | None:
    """The trained policy, for generation, into ``output_dir`` in ``dtype`` (M_{t-1}'s), written once by the main
    process: safetensors weights, config, generation config and tokenizer, and nothing that depends on where
    training ran. Returns {model_dtype, model_bytes} on the main process, None on the others."""
    # Trainer switches the KV cache off for training (TrainingArguments.use_cache=False) and that flag would be
    # saved into config.json; the saved model is for generation, so switch it back on.
    trainer.model.config.use_cache = True
    if merge_lora:  # the next iteration's engines load a plain model: merge the adapter into the weights
        trainer.model = trainer.model.merge_and_unload()
    return save_in_dtype(trainer, output_dir, dtype)  # not Trainer.save_model: it keeps FSDP2's float32


def train_stats(trainer, result, pairs: list[PreferencePair], *, n_used: int, n_offered: int,
                dpo: DPOSection) -> dict[str, Any]:
    """What `train_dpo` returns: steps, losses and rewards (the last logged value of each), timing, pair counts,
    where the reference log-probs came from, and the full log history."""
    steps = int(trainer.state.global_step)
    log_history = _jsonable_logs(trainer.state.log_history)
    runtime = float(result.metrics.get("train_runtime", 0.0))
    stats: dict[str, Any] = {
        "steps": steps,
        "train_loss": float(result.training_loss),
        "train_runtime": runtime,
        "sec_per_step": runtime / steps if steps else None,
        "n_pairs": len(pairs),
        "n_pairs_used": n_used,
        "n_pairs_offered": n_offered,
        "n_actor_pairs": sum(p.kind == "actor" for p in pairs),
        "n_judge_pairs": sum(p.kind == "judge" for p in pairs),
        "epochs": float(trainer.state.epoch or 0.0),
        "ref_logps": getattr(trainer, "ref_logps_source", "precomputed" if dpo.precompute_ref_logps else "live"),
        "ref_logps_by_rank": _every_rank(getattr(trainer, "ref_logps_source", None)),
        "world_size": trainer.accelerator.num_processes,
        "global_batch_size": dpo.global_batch_size,
        "gradient_accumulation_steps": int(trainer.args.gradient_accumulation_steps),
    }
    for name in FINAL_METRICS:
        values = [e[name] for e in log_history if e.get(name) is not None]
        stats["final_" + name.replace("/", "_")] = values[-1] if values else None
    stats["log_history"] = log_history
    return stats


def _every_rank(value) -> list:
    """``value`` from every process, in rank order (a list of one outside accelerate launch); a collective, so
    every rank calls it."""
    from accelerate.utils import gather_object

    return list(gather_object([value]))


def _progress_callback():
    """A TrainerCallback reporting optimizer steps to `metareward.progress` (the CLI's bar, Prefect's artifact)."""
    from transformers import TrainerCallback

    from metareward import progress

    class StepProgress(TrainerCallback):
        bar = None

        def on_train_begin(self, args, state, control, **kwargs):
            self.bar = progress.tracker(state.max_steps, "steps")

        def on_step_end(self, args, state, control, **kwargs):
            if self.bar is not None:
                self.bar.advance(1)

    return StepProgress()
