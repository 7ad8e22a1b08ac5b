"""The README's configuration reference is generated from the models and must match them."""

from pathlib import Path

from metareward import config_reference
from metareward.config import RunConfig

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_reference_matches_the_models():
    text = README.read_text()
    assert config_reference.block() in text, "run: python -m metareward.config_reference --write"


def test_every_leaf_field_is_listed_once_with_its_default():
    md = config_reference.markdown()
    keys = [line.split("`")[1] for line in md.splitlines()[2:]]
    assert len(keys) == len(set(keys))
    assert "dpo.beta" in keys and "judge.sampling.temperature" in keys and "engine.backend" in keys
    row = next(line for line in md.splitlines() if line.startswith("| `dpo.beta` |"))
    assert f"`{RunConfig().dpo.beta}`" in row and "DPO beta" in row
    assert "Literal['transformers', 'vllm', 'fake']" in next(
        line for line in md.splitlines() if line.startswith("| `engine.backend` |"))
