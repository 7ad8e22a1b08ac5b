"""Generation backends behind one `Engine` interface; `open_engine` picks one from the config: transformers (the
CPU default; `decoding` and `shared_prefix` are its decode loop and attention), vLLM (GPU), a fake engine for
tests; the token helpers they share (`tokens`) and where a model comes from (`models`: the embedded SmolLM2,
paths and hub ids). What the hardware does best (precision, GPU count) is asked of `metareward.hardware`.

Backends are imported lazily: importing this package never imports torch, transformers or vllm. May import the
top-level modules (`metareward.config`, `metareward.progress`, `metareward.hardware`) and
`metareward.method.prompts` (the fake engine's canned answers); nothing of training, the stages or the store.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from metareward.engines.base import Completion, Engine, Sampling

if TYPE_CHECKING:
    from metareward.config import EngineSection, ModelSection

__all__ = ["Completion", "Engine", "Sampling", "open_engine", "BACKENDS"]

BACKENDS = ("transformers", "vllm", "fake")


def open_engine(
    backend: str, model_path: str, *, engine_cfg: EngineSection, model_cfg: ModelSection, seed: int = 0
) -> Engine:
    """Build the engine for ``backend`` on the resolved ``model_path``.

    dtype: ``engine_cfg.dtype`` (the inference dtype); ``model_cfg`` supplies ``trust_remote_code``.
    """
    if backend == "fake":
        from metareward.engines.fake import FakeEngine

        return FakeEngine(model_path)
    if backend == "transformers":
        from metareward.engines.transformers_engine import TransformersEngine

        return TransformersEngine(
            model_path,
            dtype=engine_cfg.dtype,
            batch_size=engine_cfg.batch_size,
            decoder=engine_cfg.decoder,
            trust_remote_code=model_cfg.trust_remote_code,
            seed=seed,
        )
    if backend == "vllm":
        from metareward.engines.vllm_engine import VLLMEngine
        from metareward.hardware import tensor_parallel_size, visible_gpus

        return VLLMEngine(
            model_path,
            dtype=engine_cfg.dtype,
            max_model_len=engine_cfg.max_model_len,
            tensor_parallel_size=tensor_parallel_size(engine_cfg.tensor_parallel_size, visible_gpus()),
            gpu_memory_utilization=engine_cfg.gpu_memory_utilization,
            trust_remote_code=model_cfg.trust_remote_code,
            seed=seed,
        )
    raise ValueError(f"unknown engine backend {backend!r}; expected one of {', '.join(BACKENDS)}")
