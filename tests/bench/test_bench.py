"""bench/bench.py's sections that run without the model: they broke once unnoticed (a stage added after the bench
read a file the no-work stages did not write), so CI runs them."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_prefect_section_runs_a_no_work_iteration_through_the_real_flow():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "bench/bench.py", "--one", "prefect"], cwd=ROOT, env=env, text=True,
                          capture_output=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))[len("RESULT "):])
    # One smoke iteration's manifests, then two more iterations' worth: the per-stage figure divides by the
    # difference, so it needs both runs to have written every stage.
    assert res["tasks_one"] > 0 and res["tasks_three"] > res["tasks_one"]
    assert (res["three_iterations_s"] - res["one_iteration_s"]) / (res["tasks_three"] - res["tasks_one"]) == \
        pytest.approx(res["overhead_per_stage_s"], abs=1e-3)
