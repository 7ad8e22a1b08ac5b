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


def test_shipped_configs_are_package_data():
    assert {p.name for p in launch.CONFIG_DIR.glob("*.yaml")} == set(launch.STRATEGIES.values())
    with pytest.raises(ValueError, match="dpo.distributed='ddp'"):
        launch.accelerate_config("ddp")


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

    def fake_run(cmd, check):
        seen["cmd"] = cmd
        args = json.loads(Path(cmd[-1]).read_text())
        seen["args"] = args
        Path(args["stats"]).write_text(json.dumps({"steps": 3}))

    monkeypatch.setattr(launch.subprocess, "run", fake_run)
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
    dpo = DPOSection(max_steps=1, per_device_batch_size=2, gradient_accumulation_steps=1, max_length=128,
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
