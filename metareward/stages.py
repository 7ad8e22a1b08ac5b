"""The old import path of `metareward.pipeline.stages`, kept for one caller: tests/integration/conftest.py's
injected ``sitecustomize`` patches a stage function by name on ``metareward.stages``. This name is the same module
object as `metareward.pipeline.stages` (not a copy), so a function patched here is the one the tasks call. Remove
this file once that conftest imports ``metareward.pipeline.stages``.
"""

import sys

from metareward.pipeline import stages

sys.modules[__name__] = stages
