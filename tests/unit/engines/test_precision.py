"""`auto` precision: bf16 only where the hardware computes it (the CPU probes are faked both ways)."""

import logging

import pytest
import torch

from metareward.engines import precision
from metareward.config import load_config


@pytest.fixture
def native(monkeypatch):
    def set_native(avx512_bf16: bool, amx: bool = False):
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    return set_native


@pytest.mark.parametrize("avx512_bf16, amx, expected", [(True, False, True), (False, True, True),
                                                        (False, False, False)])
def test_native_bf16_is_avx512_bf16_or_amx(native, avx512_bf16, amx, expected):
    native(avx512_bf16, amx)
    assert precision.cpu_has_native_bf16() is expected


def test_auto_inference_dtype_on_a_cpu_follows_the_hardware(native):
    native(True)
    assert precision.inference_dtype("auto", "cpu") == "bfloat16"
    native(False)
    assert precision.inference_dtype("auto", "cpu") == "float32"


def test_auto_on_a_gpu_is_left_to_transformers_and_explicit_dtypes_are_kept(native):
    native(False)
    assert precision.inference_dtype("auto", "cuda") == "auto"
    assert precision.inference_dtype("float16", "cpu") == "float16"
    assert precision.inference_dtype("float32", "cpu") == "float32"


def test_explicit_bf16_on_an_emulating_cpu_is_kept_with_a_warning(native, caplog):
    native(False)
    with caplog.at_level(logging.WARNING, logger="metareward.engines.precision"):
        assert precision.inference_dtype("bfloat16", "cpu") == "bfloat16"
    assert "emulated" in caplog.text
    native(True)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="metareward.engines.precision"):
        assert precision.inference_dtype("bfloat16", "cpu") == "bfloat16"
    assert caplog.text == ""


def test_train_bf16(native, monkeypatch):
    native(False)
    assert precision.train_bf16("auto", on_gpu=False) is False
    assert precision.train_bf16(True, on_gpu=False) is True
    assert precision.train_bf16(False, on_gpu=False) is False
    native(True)
    assert precision.train_bf16("auto", on_gpu=False) is True
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert precision.train_bf16("auto", on_gpu=True) is False


def test_the_smoke_recipes_ask_for_auto():
    # `make run` must not pin bf16: on a CPU without it, emulated bf16 made the smoke run ~5x slower.
    for name in ("smoke", "smoke-eft"):
        cfg = load_config(name)
        assert cfg.engine.dtype == "auto" and cfg.dpo.bf16 == "auto"
    assert load_config("smoke-eft").eft.sft.bf16 == "auto"
    assert load_config("smoke", ["dpo.bf16=true"]).dpo.bf16 is True


def test_the_decoder_is_ours_on_a_cpu_and_hf_generate_on_a_gpu_unless_one_is_asked_for(caplog):
    from metareward.engines.precision import own_decoder

    with caplog.at_level("INFO", logger="metareward.engines.precision"):
        assert own_decoder("auto", "cpu") is True
        assert own_decoder("auto", "cuda") is False
    # 'auto' says which loop it took and why (the measured figures)
    assert "auto -> own on cpu" in caplog.text and "auto -> generate on cuda" in caplog.text
    assert own_decoder("own", "cuda") is True and own_decoder("generate", "cpu") is False
    with pytest.raises(ValueError, match="decoder must be auto, own or generate"):
        own_decoder("fast", "cpu")
