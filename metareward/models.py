"""The old import path of `metareward.engines.models`, kept for one caller: tests/integration/conftest.py imports
``metareward.models`` (the embedded model for its stack). The same module object, not a copy. Remove this file
once that conftest imports ``metareward.engines.models``.
"""

import sys

from metareward.engines import models

sys.modules[__name__] = models
