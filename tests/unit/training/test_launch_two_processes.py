"""metareward.training.launch for real: `accelerate launch` of 2 CPU processes (DDP, gloo) on a tiny random Llama
saved in bf16 (built from a config: nothing downloaded; the tokenizer is the embedded SmolLM2's).

8 pairs, 2 pairs per process, a global batch of 4: 8 / 4 = 2 optimizer steps, accumulation 4 / (2 x 2) = 1 on two
processes and 4 / (2 x 1) = 2 on one. Data-parallel SGD is the same arithmetic as accumulation on one process
(the same pairs make each step: accelerate hands process i the i-th batch of the same seeded order), so the
weights must agree within float rounding; cast to bf16 for the save they were identical here (bench/README.md).
Every launch has a timeout, so ranks that disagree (a hang in a collective) fail the test instead of blocking it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from metareward.config import DPOSection
from metareward.records import PreferencePair

REPO = Path(__file__).resolve().parents[3]
LAUNCH_TIMEOUT_S = 300  # one launch takes ~16 s on the 2-core machine

PAIRS = [PreferencePair(kind="actor" if i % 2 else "judge", prompt_id=f"p{i}", prompt=f"What is {i} + {i}?",
                        chosen=f"It is {2 * i}.", rejected="No idea at all, sorry.", chosen_id=f"p{i}-r0",
                        rejected_id=f"p{i}-r1", chosen_score=4.0, rejected_score=1.0) for i in range(8)]
DPO = DPOSection(per_device_batch_size=2, global_batch_size=4, max_length=64, learning_rate=1e-3, distributed="ddp")


def tiny_llama(folder: Path, seed: int) -> str:
    """A 2-layer Llama with random weights (seeded) in bf16, with the embedded model's tokenizer and chat template."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from metareward.engines.models import ModelNotFound, embedded_model_path

    try:
        tok = AutoTokenizer.from_pretrained(embedded_model_path())
    except ModelNotFound as e:
        pytest.skip(str(e))
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                      tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id)
    torch.manual_seed(seed)
    LlamaForCausalLM(cfg).to(torch.bfloat16).save_pretrained(folder)
    tok.save_pretrained(folder)
    return str(folder)


@pytest.fixture
def launch_env(monkeypatch):
    """accelerate's processes import metareward from this checkout, one compute thread each (2 cores)."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def _weights(folder) -> dict:
    from safetensors.torch import load_file

    return load_file(Path(folder, "model.safetensors"))


@pytest.mark.slow
def test_two_processes_train_like_one_save_once_in_bf16_and_agree_on_stored_ref_logps(tmp_path, launch_env):
    import torch
    from transformers import AutoModelForCausalLM

    from metareward.training import launch
    from metareward.training.checkpoint import weights_bytes

    model = tiny_llama(tmp_path / "m0", seed=0)
    ref = str(tmp_path / "pairs" / "ref_logps.json")

    def two(name: str, model_path: str = model) -> dict:
        return launch.train_dpo(PAIRS, model_path, str(tmp_path / name), DPO, gpus=2, seed=0, ref_logps_uri=ref,
                                timeout=LAUNCH_TIMEOUT_S)

    first = two("two")
    assert first["written_by_rank"] == 0 and first["world_size"] == 2
    assert first["steps"] == 2 and first["global_batch_size"] == 4 and first["gradient_accumulation_steps"] == 1
    assert first["ref_logps_by_rank"] == ["computed", "computed"]
    fingerprint = json.loads(Path(ref).read_text())["fingerprint"]
    # saved once, by rank 0, in the source's dtype: one weights file of the source's size (tied embeddings once)
    assert sorted(p.name for p in (tmp_path / "two").glob("*.safetensors")) == ["model.safetensors"]
    assert first["model_dtype"] == "bfloat16" and first["model_bytes"] == weights_bytes(model)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "two")
    assert loaded.dtype == torch.bfloat16

    one = launch.train_dpo(PAIRS, model, str(tmp_path / "one"), DPO, gpus=1, seed=0,
                           ref_logps_uri=str(tmp_path / "one_ref.json"))
    assert one["world_size"] == 1 and one["steps"] == 2 and one["gradient_accumulation_steps"] == 2
    a, b, base = _weights(tmp_path / "one"), _weights(tmp_path / "two"), _weights(model)
    assert any(not torch.equal(a[k], base[k]) for k in a), "training moved no weight"
    for k in a:  # within one bf16 rounding step (8 significant bits) of each other
        torch.testing.assert_close(a[k].float(), b[k].float(), rtol=2**-7, atol=1e-6)
    assert first["train_loss"] == pytest.approx(one["train_loss"], rel=1e-4)

    again = two("again")  # the stored reference log-probs: rank 0 decides, both ranks reuse them, no hang
    assert again["ref_logps"] == "stored" and again["ref_logps_by_rank"] == ["stored", "stored"]
    assert again["train_loss"] == pytest.approx(first["train_loss"], rel=1e-6)

    changed = two("changed", tiny_llama(tmp_path / "m0b", seed=1))  # another reference: every rank recomputes
    assert changed["ref_logps_by_rank"] == ["computed", "computed"]
    assert json.loads(Path(ref).read_text())["fingerprint"] != fingerprint


@pytest.mark.slow
def test_fsdp_on_two_cpu_processes_saves_the_bf16_source_in_bf16(tmp_path, launch_env):
    """The shipped FSDP2 config (full sharding, cpu_ram_efficient_loading, full state dict) runs on 2 CPU processes
    with gloo. Loaded in bf16 (the recipe's model.dtype); with mixed precision on, accelerate's FSDP2 preparation
    upcasts trainable low-precision parameters to float32 (accelerate/utils/fsdp_utils.py), which a plain
    save_model would write: the save casts back, one bf16 copy of the source's size. (Its bf16 compute is not the
    float32 arithmetic of the DDP test, so the weights are not compared with one process.) With
    dpo.gradient_checkpointing, FSDP's own activation checkpointing wraps the layers; the saved names stay the
    source's."""
    import torch
    from transformers import AutoModelForCausalLM

    from metareward.training import launch
    from metareward.training.checkpoint import weights_bytes

    model = tiny_llama(tmp_path / "m0", seed=0)
    fsdp = DPO.model_copy(update={"distributed": "fsdp", "gradient_checkpointing": True})
    stats = launch.train_dpo(PAIRS, model, str(tmp_path / "fsdp"), fsdp,
                             gpus=2, seed=0, dtype="bfloat16", ref_logps_uri=str(tmp_path / "ref.json"),
                             timeout=LAUNCH_TIMEOUT_S)
    assert stats["world_size"] == 2 and stats["steps"] == 2 and stats["gradient_accumulation_steps"] == 1
    assert stats["ref_logps_by_rank"] == ["computed", "computed"] and stats["written_by_rank"] == 0
    assert stats["model_dtype"] == "bfloat16" and stats["model_bytes"] == weights_bytes(model)
    trained = AutoModelForCausalLM.from_pretrained(tmp_path / "fsdp")
    assert trained.dtype == torch.bfloat16
    base, saved = _weights(model), _weights(tmp_path / "fsdp")
    assert set(saved) == set(base) and any(not torch.equal(p, base[n]) for n, p in saved.items())
