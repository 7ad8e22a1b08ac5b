"""docs/layout.md (the README links it) is the tree: every module of metareward/, tasks/ and flows/ is listed under
its folder, and everything listed exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("metareward", "tasks", "flows")


def layout_block() -> str:
    """The first fenced block of docs/layout.md."""
    text = (ROOT / "docs" / "layout.md").read_text()
    return re.search(r"^```\n(.*?)^```", text, re.S | re.M)[1]


def listed(block: str) -> tuple[set[str], set[str]]:
    """(files, folders) the block names, as paths from the repository root. An entry's indent (two spaces a
    level) puts it inside the last folder listed one level up; a line indented deeper continues a description."""
    files, folders, stack = set(), set(), []
    for line in block.splitlines():
        if not line.strip():
            continue
        depth = (len(line) - len(line.lstrip(" "))) // 2
        if depth > len(stack):  # indented past any folder: the previous entry's description goes on
            continue
        name = line.split()[0]
        del stack[depth:]
        path = "/".join([*stack, name.rstrip("/")])
        if name.endswith("/"):
            folders.add(path)
            stack.append(name.rstrip("/"))
        else:
            files.add(path)
    return files, folders


def tree() -> tuple[set[str], set[str]]:
    files, folders = set(), set()
    for pkg in PACKAGES:
        for p in (ROOT / pkg).rglob("*.py"):
            rel = p.relative_to(ROOT)
            folders.add(str(rel.parent))
            if p.name != "__init__.py" or rel.parent == Path("metareward"):
                files.add(str(rel))
    return files, folders


def test_the_parser_follows_the_indent():
    assert listed("a/  x\n  b.py  y\n  c/\n    d.py\n  e.py\n          more of e\nf/\n") == (
        {"a/b.py", "a/c/d.py", "a/e.py"}, {"a", "a/c", "f"})


def test_every_module_is_listed_under_its_folder():
    files, folders = listed(layout_block())
    real_files, real_folders = tree()
    assert sorted(real_files - files) == []
    assert sorted(real_folders - folders) == []


def test_everything_listed_exists():
    files, folders = listed(layout_block())
    assert sorted(f for f in files if not (ROOT / f).is_file()) == []
    assert sorted(f for f in folders if not (ROOT / f).is_dir()) == []


def test_unit_tests_mirror_the_library():
    """tests/unit/<subpackage>/test_<module>[_<what>].py for metareward/<subpackage>/<module>.py (a suffix names
    what part of the module a second file tests, e.g. test_store_s3.py)."""
    unit = ROOT / "tests" / "unit"
    orphans = []
    for test in sorted(unit.rglob("test_*.py")):
        folder = ROOT / "metareward" / test.parent.relative_to(unit)
        words = test.stem[len("test_"):].split("_")
        if not any((folder / ("_".join(words[:i]) + ".py")).is_file() for i in range(1, len(words) + 1)):
            orphans.append(str(test.relative_to(ROOT)))
    assert orphans == []
