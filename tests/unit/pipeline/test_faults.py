"""Out of memory in an engine or in training: a StageError naming the stage and the setting to lower, finished
work kept; Prefect does not retry what would fail the same way."""

from types import SimpleNamespace

import pytest

from metareward.pipeline import faults, stages
from metareward.runstore import store
from metareward.config import load_config
from metareward.engines.fake import FakeEngine
from metareward.records import ModelRef
from metareward.runstore.layout import RunLayout


class OutOfMemoryError(RuntimeError):  # torch.OutOfMemoryError's name and base
    pass


def test_is_oom():
    assert faults.is_oom(OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert faults.is_oom(MemoryError())
    assert faults.is_oom(RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory"))
    assert faults.is_oom(ValueError("No available memory for the cache blocks. Try increasing gpu_memory_utilization"))
    assert not faults.is_oom(RuntimeError("shape mismatch"))
    assert not faults.is_oom(OSError("out of memory"))  # not an exception class engines raise for memory


def test_advice_names_the_settings_with_their_values():
    cfg = load_config("smoke", ["engine.batch_size=16", "engine.shard_size=64"])
    assert faults.oom_advice("judge", cfg) == "lower engine.batch_size (now 16) or engine.shard_size (now 64)"
    vllm = load_config("smoke", ["engine.backend=vllm"])
    assert faults.oom_advice("generate", vllm).startswith("lower engine.max_model_len (now 4096) or "
                                                          "engine.gpu_memory_utilization (now 0.85)")
    assert faults.oom_advice("train", cfg) == (
        "lower dpo.per_device_batch_size (now 2; accumulation grows to keep dpo.global_batch_size=4), "
        "dpo.max_length (now 640), or set dpo.gradient_checkpointing=true")


def _cfg(root):
    return load_config("smoke", [f"storage.root={root}", "engine.backend=fake", "run.name=oom", "engine.shard_size=4"])


def test_engine_oom_names_the_setting_and_keeps_finished_shards(tmp_path, monkeypatch):
    cfg, model = _cfg(tmp_path), ModelRef(uri="fake", digest="m0", iteration=0)
    prompts_m = stages.prompts(cfg, 1)
    generate, calls = FakeEngine.generate, []

    def third_shard_oom(self, *a, **kw):
        calls.append(1)
        if len(calls) == 3:
            raise OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 79.1 GiB total)")
        return generate(self, *a, **kw)

    monkeypatch.setattr(FakeEngine, "generate", third_shard_oom)
    with pytest.raises(stages.StageError) as e:
        stages.generate(cfg, 1, model, prompts_m)
    assert str(e.value) == ("generate iter 1: out of memory (CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; "
                            "79.1 GiB total)); lower engine.batch_size (now 128) or engine.shard_size (now 4)")
    folder = RunLayout(str(tmp_path), "oom").stage(1, "generate")
    assert store.read_manifest(folder) is None
    monkeypatch.setattr(FakeEngine, "generate", generate)
    m = stages.generate(cfg, 1, model, prompts_m)  # the rerun (smaller settings would re-key; same here)
    assert m.stats["shards"] == 4 and m.stats["shards_reused"] == 2


def test_training_oom_names_the_dpo_settings(tmp_path, monkeypatch):
    import metareward.training.dpo

    def oom(*a, **kw):
        raise RuntimeError("CUDA out of memory. Tried to allocate 512.00 MiB")

    monkeypatch.setattr(metareward.training.dpo, "train_dpo", oom)
    cfg = _cfg(tmp_path)
    pairs_m = SimpleNamespace(files={"pairs": str(tmp_path / "pairs.jsonl")}, uri=str(tmp_path), digest="p")
    store.write_jsonl(pairs_m.files["pairs"], [{"prompt": "p", "chosen": "a", "rejected": "b", "kind": "actor",
                                                 "prompt_id": "p1", "chosen_id": "r1", "rejected_id": "r2",
                                                 "chosen_score": 4.0, "rejected_score": 2.0}])
    with pytest.raises(stages.StageError, match=r"^train iter 1: out of memory \(CUDA out of memory\. Tried to "
                                                r"allocate 512\.00 MiB\); lower dpo\.per_device_batch_size \(now 2"):
        stages.train(cfg, 1, ModelRef(uri="fake", digest="m0", iteration=0), pairs_m)


def test_prefect_does_not_retry_deterministic_failures():
    from metareward.config import ConfigError
    from tasks.stages import retry_worthwhile

    assert not retry_worthwhile(None, None, SimpleNamespace(data=stages.StageError("judge iter 1: health gate")))
    assert not retry_worthwhile(None, None, SimpleNamespace(data=ConfigError("bad")))
    assert retry_worthwhile(None, None, SimpleNamespace(data=ConnectionResetError()))


def test_real_torch_out_of_memory_errors_are_recognised():
    torch = pytest.importorskip("torch")
    assert faults.is_oom(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"))
    with pytest.raises(RuntimeError) as e:  # 10 TB on the CPU: refused at once, nothing is allocated
        torch.empty(10**13, dtype=torch.uint8)
    assert faults.is_oom(e.value)
