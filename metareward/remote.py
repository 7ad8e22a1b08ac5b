"""The old import path of `metareward.runstore.remote`, kept for one caller: tests/integration/test_deployments_s3.py
runs ``from metareward.remote import local_model`` in a fresh process. The same module object, not a copy. Remove
this file once that test imports ``metareward.runstore.remote``.
"""

import sys

from metareward.runstore import remote

sys.modules[__name__] = remote
