"""The configuration reference (docs/configuration.md, linked from the README) is generated from the models and
must match them."""

from pathlib import Path

from metareward import config_reference
from metareward.config import RunConfig

ROOT = Path(__file__).resolve().parents[2]


def test_the_reference_matches_the_models():
    assert config_reference.DOC == ROOT / "docs" / "configuration.md"
    text = config_reference.DOC.read_text()
    assert config_reference.block() in text, "run: python -m metareward.config_reference --write"
    assert "config-reference:begin" not in (ROOT / "README.md").read_text()  # one copy, in docs/


def test_every_leaf_field_is_listed_once_with_its_default():
    md = config_reference.markdown()
    keys = [line.split("`")[1] for line in md.splitlines()[2:]]
    assert len(keys) == len(set(keys))
    assert "dpo.beta" in keys and "judge.sampling.temperature" in keys and "engine.backend" in keys
    row = next(line for line in md.splitlines() if line.startswith("| `dpo.beta` |"))
    assert f"`{RunConfig().dpo.beta}`" in row and "DPO beta" in row
    assert "Literal['transformers', 'vllm', 'fake']" in next(
        line for line in md.splitlines() if line.startswith("| `engine.backend` |"))
