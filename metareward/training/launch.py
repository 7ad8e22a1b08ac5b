"""How the train stage and the vLLM engine use a worker's GPUs.

* One GPU (or none): DPO runs in the stage's own process; ``dpo.lora_r > 0`` trains a LoRA adapter through peft
  (merged into the saved model), the one-GPU option for models whose full fine-tuning does not fit.
* More than one GPU: the stage runs DPO through ``accelerate launch`` with a configuration shipped in
  ``metareward/configs/accelerate/`` (FSDP, DeepSpeed ZeRO-3 with ``dpo.distributed=zero3``, or plain DDP with
  ``ddp``, which also runs as CPU processes), one process per GPU; the gradient accumulation is derived from
  ``dpo.global_batch_size`` and the process count; rank 0 saves the model (in M_{t-1}'s dtype) and writes the
  statistics the stage records.
* vLLM: ``engine.tensor_parallel_size=0`` shards the engine over every GPU of the worker
  (`metareward.hardware.tensor_parallel_size`).

The command for a worker with 8 GPUs::

    >>> cmd = train_command(8, "fsdp", "/tmp/args.json", python="/opt/venv/bin/python")
    >>> cmd[:3], cmd[cmd.index("--num_processes") + 1], cmd[-4:]
    (['/opt/venv/bin/accelerate', 'launch', '--config_file'], '8', ['-m', 'metareward.training.launch', 'train', '/tmp/args.json'])

Run by hand (what the stage does): ``accelerate launch --config_file metareward/configs/accelerate/fsdp.yaml
--num_processes 8 -m metareward.training.launch train ARGS.json``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from metareward.hardware import visible_gpus

CONFIG_DIR = Path(__file__).parents[1] / "configs" / "accelerate"
STRATEGIES = {"fsdp": "fsdp.yaml", "zero3": "deepspeed_zero3.yaml", "ddp": "ddp.yaml"}


def accelerate_config(strategy: str) -> Path:
    if strategy not in STRATEGIES:
        raise ValueError(f"dpo.distributed={strategy!r}: expected one of {', '.join(STRATEGIES)}")
    return CONFIG_DIR / STRATEGIES[strategy]


def check_strategy(strategy: str) -> None:
    """ZeRO-3 needs DeepSpeed where training runs; say what to install before any process starts."""
    import importlib.util

    if strategy == "zero3" and importlib.util.find_spec("deepspeed") is None:
        raise RuntimeError("dpo.distributed=zero3 needs DeepSpeed in the training environment: `pip install "
                           "deepspeed` (built against its torch and CUDA), or use dpo.distributed=fsdp (or ddp)")


def needs_launch(gpus: int, env: dict[str, str] | None = None) -> bool:
    """Several GPUs, and not already one of accelerate's processes."""
    env = os.environ if env is None else env
    return gpus > 1 and "LOCAL_RANK" not in env


def train_command(gpus: int, strategy: str, args_file: str, python: str = sys.executable, *,
                  activation_checkpointing: bool = False) -> list[str]:
    """``accelerate launch`` of ``python -m metareward.training.launch train ARGS`` with one process per GPU; under
    FSDP, activation checkpointing is FSDP's own (the trainer's flag would add a redundant all-gather)."""
    fsdp_ckpt = ["--fsdp_activation_checkpointing", "true"] if strategy == "fsdp" and activation_checkpointing else []
    return [str(Path(python).parent / "accelerate"), "launch", "--config_file", str(accelerate_config(strategy)),
            *fsdp_ckpt, "--num_processes", str(gpus), "--num_machines", "1", "-m", "metareward.training.launch",
            "train", args_file]


def train_dpo(pairs, model_path: str, output_dir: str, dpo, *, gpus: int | None = None, timeout: float | None = None,
              **kwargs) -> dict:
    """``metareward.training.dpo.train_dpo`` in this process on one GPU (or CPU), else through ``accelerate launch``
    with ``gpus`` processes (on a CPU-only machine: CPU processes, with dpo.distributed=ddp); ``timeout`` seconds
    bound the launch (a hang becomes subprocess.TimeoutExpired)."""
    from metareward.training import dpo as dpo_module  # `dpo` is the DPOSection argument

    gpus = visible_gpus() if gpus is None else gpus
    if not needs_launch(gpus):
        return dpo_module.train_dpo(pairs, model_path, output_dir, dpo, **kwargs)
    dpo.accumulation_steps(gpus)  # a global batch the processes cannot share fails here, not in each of them
    check_strategy(dpo.distributed)
    with tempfile.TemporaryDirectory(prefix="metareward-launch-") as tmp:
        args = {"pairs": [p.model_dump(mode="json") for p in pairs], "model_path": model_path,
                "output_dir": output_dir, "dpo": dpo.model_dump(mode="json"), "kwargs": kwargs,
                "stats": str(Path(tmp, "stats.json"))}
        Path(tmp, "args.json").write_text(json.dumps(args))
        cmd = train_command(gpus, dpo.distributed, str(Path(tmp, "args.json")),
                            activation_checkpointing=dpo.gradient_checkpointing)
        subprocess.run(cmd, check=True, timeout=timeout)
        return json.loads(Path(tmp, "stats.json").read_text())


def _train_main(args_file: str) -> None:
    """One of accelerate's processes: train, and on rank 0 write the statistics for the stage."""
    from metareward.training import dpo
    from metareward.config import DPOSection
    from metareward.records import PreferencePair

    args = json.loads(Path(args_file).read_text())
    pairs = [PreferencePair.model_validate(p) for p in args["pairs"]]
    stats = dpo.train_dpo(pairs, args["model_path"], args["output_dir"], DPOSection.model_validate(args["dpo"]),
                            **args["kwargs"])
    rank = int(os.environ.get("RANK", "0"))
    if rank == 0:  # the main process's numbers, once
        Path(args["stats"]).write_text(json.dumps({**stats, "written_by_rank": rank}))
    sys.stdout.flush()
    sys.stderr.flush()
    # No teardown: freeing DDP's reducer after the gloo group was destroyed joined gloo's threads while holding the
    # GIL one of them waited for: a hang (bench/README.md).
    os._exit(0)


if __name__ == "__main__":
    if sys.argv[1:2] != ["train"] or len(sys.argv) != 3:
        sys.exit("usage: python -m metareward.training.launch train ARGS.json   (started by accelerate launch)")
    _train_main(sys.argv[2])
