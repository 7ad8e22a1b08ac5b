"""With this folder on PYTHONPATH, every Python process of a run (the `metareward` command, its stage processes
and replicas) starts with the crash driver's stand-ins installed (tests/flows/crash_driver.py): the kill soak runs
the real command, and a stage process it kills was running the same stand-ins as its parent."""

import os
import sys
from pathlib import Path

if os.environ.get("CRASH_LOG"):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import crash_driver

    sys.path.pop(0)
    crash_driver.install()
