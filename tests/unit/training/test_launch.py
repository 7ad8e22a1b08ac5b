"""metareward.training.launch: the command and configuration a worker with 1 or 8 GPUs trains with; LoRA (peft)
as the one-GPU option, run for real on the embedded model. (GPU counts and vLLM's tensor parallelism:
tests/unit/test_hardware.py.)"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from metareward.training import launch
from metareward.config import DPOSection


def test_no_launch_on_one_gpu_or_inside_accelerate():
    assert not launch.needs_launch(0, {}) and not launch.needs_launch(1, {})
    assert launch.needs_launch(8, {})
    assert not launch.needs_launch(8, {"LOCAL_RANK": "3"})  # already one of accelerate's 8 processes


@pytest.mark.parametrize("strategy, kind", [("fsdp", "FSDP"), ("zero3", "DEEPSPEED")])
def test_command_for_eight_gpus(strategy, kind):
    cmd = launch.train_command(8, strategy, "/tmp/a.json", python="/opt/venv/bin/python")
    assert cmd == ["/opt/venv/bin/accelerate", "launch", "--config_file", str(launch.accelerate_config(strategy)),
                   "--num_processes", "8", "--num_machines", "1", "-m", "metareward.training.launch", "train", "/tmp/a.json"]
    cfg = yaml.safe_load(Path(cmd[3]).read_text())
    assert cfg["distributed_type"] == kind and cfg["num_machines"] == 1 and cfg["mixed_precision"] == "bf16"
    if kind == "FSDP":  # everything sharded, one full state dict saved by rank 0
        assert cfg["fsdp_config"]["fsdp_state_dict_type"] == "FULL_STATE_DICT"
        assert cfg["fsdp_config"]["fsdp_auto_wrap_policy"] == "TRANSFORMER_BASED_WRAP"
    else:
        assert cfg["deepspeed_config"]["zero_stage"] == 3 and cfg["deepspeed_config"]["zero3_save_16bit_model"]


def test_under_fsdp_activation_checkpointing_is_fsdps_own():
    """dpo.gradient_checkpointing under FSDP: accelerate launch turns FSDP's on, and the trainer's flag, read in
    each process from accelerate's environment, stays off; other strategies keep the trainer's flag."""
    from trl import DPOConfig

    from metareward.training.dpo import fsdp_checkpoints_activations, trainer_args

    cmd = launch.train_command(8, "fsdp", "/tmp/a.json", activation_checkpointing=True)
    assert cmd[cmd.index("--fsdp_activation_checkpointing") + 1] == "true"
    assert "--fsdp_activation_checkpointing" not in launch.train_command(8, "ddp", "/tmp/a.json",
                                                                        activation_checkpointing=True)
    fsdp_env = {"ACCELERATE_USE_FSDP": "true", "FSDP_ACTIVATION_CHECKPOINTING": "true"}
    assert fsdp_checkpoints_activations(fsdp_env) and not fsdp_checkpoints_activations({})
    args = dict(output_dir="o", dtype="float32", trust_remote_code=False, seed=0)
    flag = "activation_checkpointing" if "activation_checkpointing" in DPOConfig.__dataclass_fields__ \
        else "gradient_checkpointing"
    assert trainer_args(DPOConfig, DPOSection(gradient_checkpointing=True), **args)[flag] is True


def test_trainer_flag_is_off_where_fsdp_checkpoints(monkeypatch):
    from trl import DPOConfig

    from metareward.training.dpo import trainer_args

    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("FSDP_ACTIVATION_CHECKPOINTING", "true")
    flag = "activation_checkpointing" if "activation_checkpointing" in DPOConfig.__dataclass_fields__ \
        else "gradient_checkpointing"
    args = trainer_args(DPOConfig, DPOSection(gradient_checkpointing=True), output_dir="o", dtype="float32",
                        trust_remote_code=False, seed=0)
    assert args[flag] is False


def test_shipped_configs_are_package_data():
    assert {p.name for p in launch.CONFIG_DIR.glob("*.yaml")} == set(launch.STRATEGIES.values())
    with pytest.raises(ValueError, match="dpo.distributed='tp'"):
        launch.accelerate_config("tp")


def test_ddp_config_starts_one_process_per_device_and_leaves_precision_to_dpo_bf16():
    """MULTI_GPU makes accelerate start the processes with torchrun; on a machine without GPUs each process falls
    back to the CPU with gloo (the trainer's use_cpu), which is how the 2-process test runs."""
    cfg = yaml.safe_load(launch.accelerate_config("ddp").read_text())
    assert cfg["distributed_type"] == "MULTI_GPU" and cfg["mixed_precision"] == "no" and cfg["use_cpu"] is False


@pytest.mark.parametrize("processes, accumulation", [(1, 16), (2, 8), (8, 2)])
def test_the_global_batch_is_the_same_on_1_2_and_8_processes(processes, accumulation):
    """32 pairs a step (the paper's) with 2 per process: 2 x 16 on one process, 2 x 2 x 8 on two, 2 x 8 x 2 on
    eight: always 32."""
    d = DPOSection(per_device_batch_size=2, global_batch_size=32)
    assert d.accumulation_steps(processes) == accumulation
    assert d.per_device_batch_size * processes * d.accumulation_steps(processes) == 32


def test_a_global_batch_the_processes_cannot_share_is_refused_before_launch(monkeypatch):
    """32 pairs over 3 processes of 2 pairs (6 a pass) does not divide: the error names both fields, and no
    process starts."""
    monkeypatch.setattr(launch.subprocess, "run", lambda *a, **k: pytest.fail("launched"))
    d = DPOSection(per_device_batch_size=2, global_batch_size=32)
    message = r"dpo.global_batch_size=32 is not a multiple of dpo.per_device_batch_size=2 x 3 process\(es\) = 6"
    with pytest.raises(ValueError, match=message):
        launch.train_dpo([], "/m0", "/out", d, gpus=3)
    with pytest.raises(ValueError, match="dpo.global_batch_size=5 is not a multiple"):
        DPOSection(per_device_batch_size=2, global_batch_size=5)  # no process count divides it: refused at config time


def test_zero3_without_deepspeed_is_refused_before_launch_saying_what_to_install(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "deepspeed" else real(name, *a))
    monkeypatch.setattr(launch.subprocess, "run", lambda *a, **k: pytest.fail("launched"))
    with pytest.raises(RuntimeError, match="pip install deepspeed"):
        launch.train_dpo([], "/m0", "/out", DPOSection(distributed="zero3"), gpus=8)


def test_old_recipes_accumulation_reads_as_the_global_batch_it_meant():
    """Before global_batch_size, `gradient_accumulation_steps: 32` with 1 pair per device meant 32 on one GPU."""
    assert DPOSection(per_device_batch_size=1, gradient_accumulation_steps=32).global_batch_size == 32
    with pytest.raises(ValueError, match="set dpo.global_batch_size only"):
        DPOSection(global_batch_size=32, gradient_accumulation_steps=16)


def test_one_gpu_trains_in_process(monkeypatch, tmp_path):
    import metareward.training.dpo

    called, trained = [], []
    monkeypatch.setattr(launch.subprocess, "run", lambda *a, **k: called.append(a))
    monkeypatch.setattr(metareward.training.dpo, "train_dpo", lambda pairs, m, out, dpo, **kw: trained.append((m, kw)) or {})
    assert launch.train_dpo([], "m0", str(tmp_path / "out"), DPOSection(), gpus=1, seed=3) == {}
    assert trained == [("m0", {"seed": 3})] and not called


def test_eight_gpus_train_through_accelerate(monkeypatch, tmp_path):
    """The stage hands the pairs and settings to accelerate's processes in a JSON file; rank 0 writes the stats."""
    import json

    from metareward.records import PreferencePair

    pair = PreferencePair(kind="actor", prompt_id="p", prompt="q", chosen="a", rejected="b", chosen_id="p-r0",
                          rejected_id="p-r1", chosen_score=4.0, rejected_score=1.0)
    seen = {}

    def fake_run(cmd, check, timeout=None):
        seen["cmd"] = cmd
        args = json.loads(Path(cmd[-1]).read_text())
        seen["args"] = args
        Path(args["stats"]).write_text(json.dumps({"steps": 3}))

    monkeypatch.setattr(launch.subprocess, "run", fake_run)
    monkeypatch.setattr(launch, "check_strategy", lambda strategy: None)  # DeepSpeed is not installed here
    stats = launch.train_dpo([pair], "/m0", "/out", DPOSection(distributed="zero3"), gpus=8, seed=5)
    assert stats == {"steps": 3}
    assert seen["cmd"][seen["cmd"].index("--num_processes") + 1] == "8"
    assert seen["cmd"][3].endswith("deepspeed_zero3.yaml")
    assert seen["args"]["pairs"][0]["chosen"] == "a" and seen["args"]["kwargs"] == {"seed": 5}
    assert seen["args"]["dpo"]["distributed"] == "zero3"


@pytest.mark.slow
def test_lora_dpo_saves_a_merged_model(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    from metareward.engines.models import embedded_model_path
    from metareward.records import PreferencePair

    PAIRS = [PreferencePair(kind="actor", prompt_id=f"p{i}", prompt=q, chosen=a, rejected=b, chosen_id=f"p{i}-r0",
                            rejected_id=f"p{i}-r1", chosen_score=4.0, rejected_score=1.0)
             for i, (q, a, b) in enumerate([("What is the capital of France?", "Paris.", "A country."),
                                            ("Name a primary colour.", "Red.", "Colours are nice.")])]
    base_path = embedded_model_path()
    dpo = DPOSection(max_steps=1, per_device_batch_size=2, global_batch_size=2, max_length=128,
                     learning_rate=1e-3, lora_r=4, lora_alpha=8)
    stats = launch.train_dpo(PAIRS, base_path, str(tmp_path / "m"), dpo, seed=0, gpus=0)
    assert stats["steps"] == 1
    names = {p.name for p in (tmp_path / "m").iterdir()}
    assert "model.safetensors" in names and "adapter_config.json" not in names  # a plain model, adapter merged
    trained = AutoModelForCausalLM.from_pretrained(tmp_path / "m", dtype=torch.float32)
    base = dict(AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32).named_parameters())

    assert set(dict(trained.named_parameters())) == set(base)
    changed = [n for n, p in trained.named_parameters() if not torch.equal(p, base[n])]
    assert changed and all("proj" in n for n in changed)  # only the LoRA-targeted linear layers moved


def test_doctests():
    import doctest

    from metareward.training import launch

    result = doctest.testmod(launch)
    assert result.attempted > 0 and result.failed == 0
