"""ruff over the whole tree with the rules of pyproject.toml ([tool.ruff.lint]: unused and undefined names,
statement errors): `make lint`, run by CI as part of `make test`."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_finds_nothing():
    res = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format", "concise", "."],
                         cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_ruff_would_report_an_unused_name():
    """The rules are live: the same check fails on code with an unused import."""
    res = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--config", str(ROOT / "pyproject.toml"),
                          "--stdin-filename", "probe.py", "-"], input="import os\n", cwd=ROOT,
                         capture_output=True, text=True)
    assert res.returncode == 1 and "F401" in res.stdout, res.stdout + res.stderr
