"""metareward.hardware: the GPUs a process may use and the host's to share, vLLM's tensor parallelism, the CPU
cores, `auto` precision (bf16 only where the hardware computes it; the CPU probes are faked both ways) and the
model cache folder."""

import doctest
import logging
import os

import pytest
import torch

from metareward import hardware
from metareward.config import load_config


def test_doctests():
    result = doctest.testmod(hardware)
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.parametrize("env, gpus", [
    ({"CUDA_VISIBLE_DEVICES": "0,1,2,3,4,5,6,7"}, 8), ({"CUDA_VISIBLE_DEVICES": "3"}, 1),
    ({"CUDA_VISIBLE_DEVICES": ""}, 0), ({"CUDA_VISIBLE_DEVICES": "-1"}, 0),
])
def test_visible_gpus_from_cuda_visible_devices(env, gpus):
    assert hardware.visible_gpus(env) == gpus


def test_tensor_parallel_over_the_workers_gpus():
    assert hardware.tensor_parallel_size(0, 8) == 8 and hardware.tensor_parallel_size(0, 0) == 1
    assert hardware.tensor_parallel_size(2, 8) == 2
    cfg = load_config("llama3-8b", [])
    assert cfg.engine.tensor_parallel_size == 1 and cfg.engine.replicas == 0  # the recipe: a replica per GPU


def test_host_gpus_metareward_gpus_first_then_cuda_visible_devices(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2,3")
    monkeypatch.setenv(hardware.GPUS_ENV, "0,1,5")
    assert hardware.host_gpus() == [0, 1, 5]
    monkeypatch.delenv(hardware.GPUS_ENV)
    assert hardware.host_gpus() == [2, 3]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert hardware.host_gpus() == []


def test_host_gpus_without_either_asks_nvidia_smi_and_is_empty_without_it(monkeypatch):
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.delenv(hardware.GPUS_ENV, raising=False)

    def no_smi(*a, **k):
        raise FileNotFoundError("nvidia-smi")

    monkeypatch.setattr(hardware.subprocess, "run", no_smi)
    assert hardware.host_gpus() == []


def test_usable_cores_are_the_affinity(monkeypatch):
    if hasattr(os, "sched_getaffinity"):
        assert hardware.usable_cores() == len(os.sched_getaffinity(0))
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 6)
    assert hardware.usable_cores() == 6


def test_model_cache_dir_follows_metareward_cache(monkeypatch, tmp_path):
    monkeypatch.setenv(hardware.CACHE_ENV, str(tmp_path))
    assert hardware.model_cache_dir() == tmp_path / "models"
    monkeypatch.delenv(hardware.CACHE_ENV)
    assert str(hardware.model_cache_dir()).endswith(os.path.join(".cache", "metareward", "models"))


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
    assert hardware.cpu_has_native_bf16() is expected


def test_auto_inference_dtype_on_a_cpu_follows_the_hardware(native):
    native(True)
    assert hardware.inference_dtype("auto", "cpu") == "bfloat16"
    native(False)
    assert hardware.inference_dtype("auto", "cpu") == "float32"


def test_auto_on_a_gpu_is_left_to_transformers_and_explicit_dtypes_are_kept(native):
    native(False)
    assert hardware.inference_dtype("auto", "cuda") == "auto"
    assert hardware.inference_dtype("float16", "cpu") == "float16"
    assert hardware.inference_dtype("float32", "cpu") == "float32"


def test_explicit_bf16_on_an_emulating_cpu_is_kept_with_a_warning(native, caplog):
    native(False)
    with caplog.at_level(logging.WARNING, logger="metareward.hardware"):
        assert hardware.inference_dtype("bfloat16", "cpu") == "bfloat16"
    assert "emulated" in caplog.text
    native(True)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="metareward.hardware"):
        assert hardware.inference_dtype("bfloat16", "cpu") == "bfloat16"
    assert caplog.text == ""


def test_train_bf16(native, monkeypatch):
    native(False)
    assert hardware.train_bf16("auto", on_gpu=False) is False
    assert hardware.train_bf16(True, on_gpu=False) is True
    assert hardware.train_bf16(False, on_gpu=False) is False
    native(True)
    assert hardware.train_bf16("auto", on_gpu=False) is True
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert hardware.train_bf16("auto", on_gpu=True) is False


def test_the_smoke_recipes_ask_for_auto():
    # `make run` must not pin bf16: on a CPU without it, emulated bf16 made the smoke run ~5x slower.
    for name in ("smoke", "smoke-eft"):
        cfg = load_config(name)
        assert cfg.engine.dtype == "auto" and cfg.dpo.bf16 == "auto"
    assert load_config("smoke-eft").eft.sft.bf16 == "auto"
    assert load_config("smoke", ["dpo.bf16=true"]).dpo.bf16 is True

