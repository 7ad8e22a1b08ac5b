"""metareward.training.dpo: the DPO step (TRL DPOTrainer) on actor + judge preference pairs."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from metareward.config import DPOSection
from metareward.records import PreferencePair

# No network on the test machines: the hub client would otherwise try telemetry and lookups during training.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

REPO = Path(__file__).resolve().parents[3]


def _pair(i: int, kind: str, prompt: str, chosen: str, rejected: str) -> PreferencePair:
    return PreferencePair(
        kind=kind,
        prompt_id=f"p{i:03d}",
        prompt=prompt,
        chosen=chosen,
        rejected=rejected,
        chosen_id=f"p{i:03d}-r0",
        rejected_id=f"p{i:03d}-r1",
        chosen_score=4.0,
        rejected_score=1.0,
    )


PAIRS = [
    _pair(0, "actor", "What is the capital of France?", "The capital of France is Paris.", "France is a country."),
    _pair(1, "actor", "Name a primary colour.", "Red is a primary colour.", "Colours are nice to look at."),
    _pair(2, "actor", "What is 2 + 3?", "2 + 3 = 5.", "It is probably 7."),
    _pair(3, "actor", "Say hello in Spanish.", "Hola.", "I cannot help with that."),
    _pair(
        4,
        "judge",
        "Score the response to 'What is 2 + 3?'\n<response>5</response>\nEnd with 'Score: N'.",
        "The answer is correct and direct.\nScore: 5",
        "Hard to say.\nScore: 1",
    ),
    _pair(
        5,
        "judge",
        "Score the response to 'Say hello in Spanish.'\n<response>Hola.</response>\nEnd with 'Score: N'.",
        "A correct, concise greeting.\nScore: 5",
        "The response is long and off topic.\nScore: 2",
    ),
]


def test_import_does_not_load_torch():
    code = "import metareward.training.dpo, sys; assert 'torch' not in sys.modules, 'torch imported'; " \
        "assert 'trl' not in sys.modules and 'transformers' not in sys.modules"
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_empty_pairs_raise_clear_error(tmp_path):
    from metareward.training.dpo import train_dpo

    with pytest.raises(ValueError, match="no preference pairs"):
        train_dpo([], "unused-model", str(tmp_path / "out"), DPOSection())


def test_preference_rows_conversational_and_seeded_shuffle():
    from metareward.training.dpo import preference_rows

    rows = preference_rows(PAIRS, seed=0)
    assert len(rows) == len(PAIRS)
    assert rows == preference_rows(PAIRS, seed=0)
    assert rows != preference_rows(PAIRS, seed=1)  # the seed decides the order (actor and judge pairs mixed)
    by_prompt = {p.prompt: p for p in PAIRS}
    for r in rows:
        assert r["prompt"][0]["role"] == "user" and len(r["prompt"]) == 1
        p = by_prompt[r["prompt"][0]["content"]]
        assert r["chosen"] == [{"role": "assistant", "content": p.chosen}]
        assert r["rejected"] == [{"role": "assistant", "content": p.rejected}]


def test_jsonable_logs_keeps_numbers_only():
    from metareward.training.dpo import _jsonable_logs

    logs = _jsonable_logs([{"loss": 0.5, "step": 3, "note": "x", "flag": True, "bad": float("nan")}])
    assert logs == [{"loss": 0.5, "step": 3.0, "bad": None}]
    json.dumps(logs, allow_nan=False)


@pytest.mark.slow
def test_train_dpo_updates_and_saves_the_model(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from metareward.engines.models import ModelNotFound, embedded_model_path
    from metareward.training.dpo import train_dpo

    try:
        base_path = embedded_model_path()
    except ModelNotFound as e:
        pytest.skip(str(e))

    dpo = DPOSection(
        max_steps=2, per_device_batch_size=2, global_batch_size=2, max_length=128, learning_rate=1e-5
    )
    out = tmp_path / "model"
    stats = train_dpo(PAIRS, base_path, str(out), dpo, seed=0, work_dir=str(tmp_path / "work"))

    assert stats["steps"] == 2
    # 2 steps x batch 2: training reads 4 of the 6 pairs, so only those are offered to TRL
    assert stats["n_pairs"] == 6 and stats["n_pairs_offered"] == 4 and stats["n_pairs_used"] == 4
    assert stats["n_actor_pairs"] == 4 and stats["n_judge_pairs"] == 2
    losses = [e["loss"] for e in stats["log_history"] if "loss" in e]
    assert len(losses) == 2 and all(math.isfinite(v) for v in losses)
    assert losses[0] == pytest.approx(math.log(2), abs=1e-3)  # policy == reference at the first step
    assert math.isfinite(stats["train_loss"]) and stats["sec_per_step"] > 0
    # where the wall time went: the steps' phase holds TRL's own step time (its train_runtime) and more
    assert set(stats["phase_seconds"]) == {"setup", "train", "save"}
    assert stats["phase_seconds"]["train"] >= stats["train_runtime"] - 0.01 and stats["phase_seconds"]["setup"] > 0
    assert stats["final_loss"] == losses[-1]
    assert stats["final_rewards_accuracies"] is not None and stats["final_rewards_margins"] is not None
    json.dumps(stats, allow_nan=False)

    assert (out / "model.safetensors").is_file() and not (out / "training_args.bin").exists()
    trained = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    base = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32)
    assert trained.config.use_cache is True
    base_params = dict(base.named_parameters())
    changed = [n for n, p in trained.named_parameters() if not torch.equal(p, base_params[n])]
    assert changed, "no weight changed after two DPO steps"
    tok = AutoTokenizer.from_pretrained(out)
    assert tok.eos_token == AutoTokenizer.from_pretrained(base_path).eos_token


@pytest.mark.slow
def test_reference_logps_are_computed_once_and_reused(tmp_path):
    """The reference pass is stored beside the pairs: a rerun reads it back and trains exactly as before; a
    change that alters the reference log-probs (truncation) recomputes them."""
    from metareward.engines.models import ModelNotFound, embedded_model_path
    from metareward.training.dpo import train_dpo

    try:
        base_path = embedded_model_path()
    except ModelNotFound as e:
        pytest.skip(str(e))
    ref = tmp_path / "pairs" / "ref_logps.json"
    dpo = DPOSection(max_steps=2, per_device_batch_size=2, global_batch_size=2, max_length=128,
                     learning_rate=1e-5)

    def run(name: str, d: DPOSection) -> dict:
        return train_dpo(PAIRS, base_path, str(tmp_path / name), d, seed=0, work_dir=str(tmp_path / f"w-{name}"),
                         ref_logps_uri=str(ref))

    first = run("a", dpo)
    assert first["ref_logps"] == "computed" and ref.is_file()
    stored = json.loads(ref.read_text())
    assert stored["rows"] == 4 and len(stored["chosen"]) == len(stored["rejected"]) == 4  # 2 steps x 2 pairs
    assert all(x < 0 for x in stored["chosen"] + stored["rejected"])  # summed log-probs of real tokens

    again = run("b", dpo)
    assert again["ref_logps"] == "stored"
    losses = lambda s: [e["loss"] for e in s["log_history"] if "loss" in e]  # noqa: E731
    assert losses(again) == pytest.approx(losses(first), rel=1e-6)

    shorter = run("c", dpo.model_copy(update={"max_length": 64}))
    assert shorter["ref_logps"] == "computed"  # truncation changed what the reference scores
    assert json.loads(ref.read_text())["chosen"] != stored["chosen"]


def test_rows_seen_counts_what_max_steps_lets_training_read():
    from metareward.training.dpo import rows_seen

    d = DPOSection(max_steps=4, per_device_batch_size=2, global_batch_size=4)
    assert rows_seen(32, d) == 16  # 4 steps x a global batch of 4, on any number of processes
    assert rows_seen(10, d) == 10  # never more than there are
    assert rows_seen(32, d.model_copy(update={"max_steps": -1})) == 32  # epochs decide: all pairs


@pytest.mark.parametrize("native, expected", [(True, True), (False, False)])
def test_trainer_args_resolve_bf16_auto_from_the_cpu(monkeypatch, native, expected):
    import torch
    from trl import DPOConfig

    from metareward.training.dpo import trainer_args

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    args = trainer_args(DPOConfig, DPOSection(bf16="auto"), output_dir="o", dtype="float32",
                        trust_remote_code=False, seed=0)
    assert args["bf16"] is expected and args["use_cpu"] is True
    assert trainer_args(DPOConfig, DPOSection(bf16=True), output_dir="o", dtype="float32",
                        trust_remote_code=False, seed=0)["bf16"] is True


def test_the_overridden_trl_method_is_where_the_pinned_trl_has_it():
    """training.dpo overrides DPOTrainer._precompute_ref_logps(dataset, name, batch_size), a private method: the
    pinned TRL range (pyproject.toml) must still have it with that signature, and still call it from __init__ when
    precompute_ref_log_probs is on (else stored log-probs would silently never be used)."""
    import inspect

    from trl import DPOTrainer

    params = list(inspect.signature(DPOTrainer._precompute_ref_logps).parameters)
    assert params == ["self", "dataset", "name", "batch_size"]
    assert "self._precompute_ref_logps(" in inspect.getsource(DPOTrainer.__init__)
