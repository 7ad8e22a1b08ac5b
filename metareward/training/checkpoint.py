"""M_t as the next stages load it: one copy, written by the main process, in the dtype of M_{t-1}.

Training may hold the weights in another dtype than the checkpoint it started from: ``model.dtype=float32`` on a
bf16 checkpoint, or FSDP2 with mixed precision, which upcasts every trainable parameter to float32 (an 8B model
would otherwise be saved as ~32 GB instead of ~16 GB). The save casts back; the dtype is read from the safetensors
headers (no tensor loaded)::

    >>> import tempfile, torch
    >>> from safetensors.torch import save_file
    >>> d = tempfile.mkdtemp()
    >>> save_file({"w": torch.zeros(4, dtype=torch.bfloat16), "step": torch.zeros(1, dtype=torch.int64)},
    ...           d + "/model.safetensors")
    >>> checkpoint_dtype(d), weights_bytes(d) > 8
    ('bfloat16', True)
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

# safetensors' dtype names -> torch's, for the floating types a checkpoint's weights use
SAFETENSORS_FLOATS = {"BF16": "bfloat16", "F16": "float16", "F32": "float32", "F64": "float64"}


def safetensors_header(path: str | Path) -> dict:
    """The JSON header of a .safetensors file: {name: {dtype, shape, data_offsets}, "__metadata__": ...}."""
    with open(path, "rb") as f:
        size = int.from_bytes(f.read(8), "little")
        return json.loads(f.read(size))


def checkpoint_dtype(model_dir: str | Path) -> str:
    """The floating dtype holding most of a checkpoint's weight bytes ('bfloat16', 'float32', ...); without
    safetensors files, config.json's ``dtype`` (``torch_dtype`` before transformers 5), else 'float32'."""
    sizes: Counter[str] = Counter()
    for file in Path(model_dir).glob("*.safetensors"):
        for name, info in safetensors_header(file).items():
            if name != "__metadata__" and info["dtype"] in SAFETENSORS_FLOATS:
                start, end = info["data_offsets"]
                sizes[SAFETENSORS_FLOATS[info["dtype"]]] += end - start
    if sizes:
        return sizes.most_common(1)[0][0]
    config = Path(model_dir, "config.json")
    cfg = json.loads(config.read_text()) if config.is_file() else {}
    return str(cfg.get("dtype") or cfg.get("torch_dtype") or "float32")


def weights_bytes(model_dir: str | Path) -> int:
    """Bytes of a checkpoint's weights (its .safetensors files)."""
    return sum(f.stat().st_size for f in Path(model_dir).glob("*.safetensors"))


def save_in_dtype(trainer, output_dir: str, dtype: str) -> dict | None:
    """Every process calls it (FSDP and ZeRO-3 gather the full state dict collectively); the main process casts
    the floating tensors to ``dtype``, writes weights, config and tokenizer, and returns {model_dtype, model_bytes};
    the others return None once it is written."""
    import torch

    acc = trainer.accelerator
    state = acc.get_state_dict(trainer.deepspeed if trainer.is_deepspeed_enabled else trainer.model)
    info = None
    if acc.is_main_process:
        state = cast_state_dict(state, getattr(torch, dtype))
        acc.unwrap_model(trainer.model).save_pretrained(output_dir, state_dict=state)
        trainer.processing_class.save_pretrained(output_dir)
        _set_config_dtype(output_dir, dtype)
        info = {"model_dtype": checkpoint_dtype(output_dir), "model_bytes": weights_bytes(output_dir)}
    acc.wait_for_everyone()
    return info


def cast_state_dict(state: dict, dtype) -> dict:
    """Floating tensors cast to ``dtype``; tensors that shared storage (tied embeddings) still share it, so
    save_pretrained writes them once."""
    cast: dict = {}
    out = {}
    for name, tensor in state.items():
        if not tensor.is_floating_point():
            out[name] = tensor
            continue
        key = (tensor.data_ptr(), tuple(tensor.shape))
        if key not in cast:
            cast[key] = tensor.to(dtype)
        out[name] = cast[key]
    return out


def _set_config_dtype(output_dir: str, dtype: str) -> None:
    """save_pretrained writes the in-memory parameters' dtype into config.json, not the saved tensors'."""
    path = Path(output_dir, "config.json")
    config = json.loads(path.read_text())
    config["dtype"] = dtype
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
