"""The stage command with a slow fake engine (each generate call sleeps SLOW_STAGE_DELAY seconds), so a test can
kill a replica between two of its shards. Run as `python slow_stage.py stage generate RUN --iter 1 ...`."""

import os
import sys
import time

from metareward.engines.fake import FakeEngine

_generate = FakeEngine.generate


def slow_generate(self, *args, **kwargs):
    time.sleep(float(os.environ.get("SLOW_STAGE_DELAY", "1")))
    return _generate(self, *args, **kwargs)


FakeEngine.generate = slow_generate

if __name__ == "__main__":
    from metareward.cli import main

    sys.argv = ["metareward", *sys.argv[1:]]
    main()
