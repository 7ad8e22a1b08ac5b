"""Seconds per DPO step on this machine: metareward.training.dpo.train_dpo against a bare DPOTrainer with the same settings.

16 pairs, batch 2, no accumulation, max_length 256, one epoch (8 steps), fp32 and bf16 autocast, the embedded
SmolLM2-135M-Instruct. Each case runs in its own process so one cannot warm the next::

    HF_HUB_OFFLINE=1 HF_HUB_DISABLE_TELEMETRY=1 .venv/bin/python bench/dpo_step_time.py [case ...]

Cases: fn-fp32 fn-bf16 direct-fp32 direct-bf16 (default: all four). Prints one JSON line per case.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CASES = ("fn-fp32", "fn-bf16", "direct-fp32", "direct-bf16")
N_PAIRS, BATCH, MAX_LENGTH = 16, 2, 256


def make_pairs():
    from metareward.records import PreferencePair

    topics = ["rivers", "volcanoes", "bread", "chess", "bees", "glaciers", "trains", "tea"]
    pairs = []
    for i in range(N_PAIRS):
        t = topics[i % len(topics)]
        prompt = f"Write a short, well organised explanation of {t} for a curious twelve-year-old (request {i})."
        body = " ".join(f"Fact {k} about {t}: it is interesting, and here is why it matters to people." for k in range(12))
        pairs.append(
            PreferencePair(
                kind="actor" if i % 4 else "judge",
                prompt_id=f"p{i:03d}",
                prompt=prompt,
                chosen=f"Here is a clear explanation of {t}. {body}",
                rejected=f"{t.capitalize()}? Not sure. " + body[: len(body) // 2],
                chosen_id=f"p{i:03d}-r0",
                rejected_id=f"p{i:03d}-r1",
                chosen_score=4.0,
                rejected_score=2.0,
            )
        )
    return pairs


def run_case(case: str) -> dict:
    from metareward.config import DPOSection
    from metareward.engines.models import embedded_model_path

    bf16 = case.endswith("bf16")
    dpo = DPOSection(
        per_device_batch_size=BATCH, global_batch_size=BATCH, max_length=MAX_LENGTH, bf16=bf16,
        learning_rate=5e-6, num_epochs=1.0,
    )
    model = embedded_model_path()
    pairs = make_pairs()
    # The libraries both cases use, imported before the clock starts: what is timed is the training (model
    # load(s), tokenising, reference pass, steps, save), not Python imports, which only the first case in a process
    # would pay (bench.py runs each case in a fresh process in any case).
    import datasets  # noqa: F401
    import trl  # noqa: F401
    from trl import DPOConfig, DPOTrainer  # noqa: F401

    from metareward.training.dpo import PhaseClock

    t0 = time.perf_counter()
    clock = PhaseClock()  # the phases the train stage reports, timed the same way for the bare trainer
    with tempfile.TemporaryDirectory() as tmp:
        if case.startswith("fn"):
            from metareward.training.dpo import train_dpo

            stats = train_dpo(pairs, model, f"{tmp}/out", dpo, seed=0, work_dir=f"{tmp}/work")
            steps, runtime, phases = stats["steps"], stats["train_runtime"], stats["phase_seconds"]
        else:
            import torch
            from datasets import Dataset
            from transformers import AutoTokenizer
            from trl import DPOConfig, DPOTrainer

            from metareward.training.dpo import preference_rows

            args = DPOConfig(
                output_dir=f"{tmp}/work", model_init_kwargs={"dtype": "float32"}, beta=dpo.beta,
                learning_rate=dpo.learning_rate, lr_scheduler_type=dpo.lr_scheduler_type, warmup_steps=0.0,
                per_device_train_batch_size=BATCH, gradient_accumulation_steps=1, num_train_epochs=1.0,
                max_steps=-1, max_length=MAX_LENGTH, bf16=bf16, activation_checkpointing=False, seed=0,
                use_cpu=not torch.cuda.is_available(), dataloader_num_workers=0, dataloader_pin_memory=False,
                logging_steps=1, save_strategy="no", report_to="none",
            )
            trainer = DPOTrainer(
                model=model, args=args, train_dataset=Dataset.from_list(preference_rows(pairs, 0)),
                processing_class=AutoTokenizer.from_pretrained(model),
            )
            clock.lap("setup")
            result = trainer.train()
            clock.lap("train")
            trainer.save_model(f"{tmp}/out")
            clock.lap("save")
            steps, runtime, phases = trainer.state.global_step, result.metrics["train_runtime"], clock.laps
    import torch

    return {
        "case": case, "steps": steps, "train_runtime_s": round(runtime, 2), "sec_per_step": round(runtime / steps, 2),
        "wall_s": round(time.perf_counter() - t0, 1), "phase_seconds": phases, "torch_threads": torch.get_num_threads(),
        "loadavg_after": os.getloadavg()[0],
    }


def run_in_process(case: str) -> dict:
    """One case in a fresh process (nothing warmed by an earlier case); ``error`` holds its stderr if it failed."""
    load = os.getloadavg()[0]
    proc = subprocess.run(
        [sys.executable, __file__, "--one", case], cwd=ROOT, capture_output=True, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode or not lines:
        return {"case": case, "error": proc.stderr[-2000:]}
    return {**json.loads(lines[-1][7:]), "loadavg_before": load}


def main(argv: list[str]) -> None:
    if len(argv) == 2 and argv[0] == "--one":
        print("RESULT " + json.dumps(run_case(argv[1])), flush=True)
        return
    for case in argv or CASES:
        print(json.dumps(run_in_process(case)), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
