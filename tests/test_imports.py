"""The library must stay importable without Prefect or torch (architecture.md: pure modules)."""

import subprocess
import sys

PURE = ["metareward", "metareward.config", "metareward.records", "metareward.method.prompts", "metareward.method.parsing",
        "metareward.method.scoring", "metareward.method.pairs", "metareward.runstore.store", "metareward.pipeline.stages", "metareward.reporting.summary",
        "metareward.inputs.prompt_sets", "metareward.engines.models", "metareward.engines", "metareward.training.dpo",
        "metareward.inputs.dedupe", "metareward.inputs.decontam", "metareward.inputs.prompt_sources", "metareward.inputs.prompt_pool",
        "metareward.inputs.eft", "metareward.training.sft", "metareward.pipeline.bootstrap"]


def test_pure_modules_import_neither_prefect_nor_torch():
    code = (
        "import importlib, sys\n"
        f"for m in {PURE!r}: importlib.import_module(m)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('prefect', 'torch', 'transformers', 'trl', 'vllm'))\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# Modules allowed to import torch/transformers at module level: only ever imported lazily, by a backend.
BACKEND_ONLY = ("metareward.engines.decoding", "metareward.engines.shared_prefix", "metareward.__main__")


def test_every_library_module_imports_without_heavy_dependencies():
    """The same rule for every module under metareward/ (new ones included), not only the listed ones."""
    code = (
        "import importlib, pkgutil, sys, metareward\n"
        "mods = [m.name for m in pkgutil.walk_packages(metareward.__path__, 'metareward.')]\n"
        f"mods = [m for m in mods if m not in {BACKEND_ONLY!r}]\n"
        "assert len(mods) > 30, mods\n"
        "for m in mods: importlib.import_module(m)\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('prefect', 'torch', 'transformers', 'trl', 'vllm'))\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
