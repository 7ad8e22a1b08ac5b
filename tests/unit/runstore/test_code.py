"""Code digests: what a module does, not where it lives (stage keys and the report's stamp are built on them)."""

import doctest
from pathlib import Path

import pytest

from metareward.runstore import code


def test_doctests():
    result = doctest.testmod(code)
    assert result.attempted > 0 and result.failed == 0


def test_a_moved_module_keeps_its_digest():
    """The pairs module as a move leaves it: other import lines, another docstring, a comment. Same digest; one
    changed constant is a new digest."""
    source = code.module_file("metareward.method.pairs").read_text()
    moved = ("# moved from metareward/pairs.py\n" + source
             .replace("from metareward.method.scoring import", "from metareward.scoring import")
             .replace('"""', '"""Now in another package. ', 1))
    assert moved != source
    assert code.source_digest(moved) == code.source_digest(source)
    assert code.source_digest(source.replace("return", "return  ", 1) + "\n\n") == code.source_digest(source)
    changed = source.replace("def actor_pairs(", "def actor_pairs_renamed(", 1)
    assert changed != source and code.source_digest(changed) != code.source_digest(source)


def test_a_set_of_modules_is_digested_in_any_order():
    mods = ["metareward.method.pairs", "metareward.method.scoring"]
    assert code.code_digest(mods) == code.code_digest(reversed(mods))
    assert code.code_digest(mods) != code.code_digest(mods[:1])


def test_a_function_of_imports_only_still_parses(tmp_path: Path):
    text = "def f():\n    import os\n\n\nclass C:\n    'doc'\n"
    assert code.source_digest(text) == code.source_digest("def f():\n    pass\n\n\nclass C:\n    pass\n")


def test_a_missing_module_is_an_error():
    with pytest.raises(ModuleNotFoundError, match="metareward.no_such_module"):
        code.code_digest(["metareward.no_such_module"])
