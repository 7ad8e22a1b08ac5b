"""metareward.pipeline.gpu_slots with real processes: two stage processes of one host sharing a lock folder get
distinct GPUs; with one slot the second waits until the first exits (its lock dies with it, even on SIGKILL)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

CLAIM = ("import os, sys, time; from metareward.pipeline import gpu_slots; "
         "gpu_slots.claim_from_env(1); print('GOT', os.environ['CUDA_VISIBLE_DEVICES'], time.time(), flush=True); "
         "time.sleep(float(sys.argv[1]))")


def _start(folder, gpus: str, hold_s: float) -> subprocess.Popen:
    env = {**os.environ, "METAREWARD_GPU_SLOTS": str(folder), "METAREWARD_GPUS": gpus}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    return subprocess.Popen([sys.executable, "-c", CLAIM, str(hold_s)], env=env, stdout=subprocess.PIPE, text=True)


def _got(proc: subprocess.Popen) -> tuple[str, float]:
    line = proc.stdout.readline().split()
    assert line[:1] == ["GOT"], line
    return line[1], float(line[2])


def test_two_processes_on_two_slots_get_distinct_gpus(tmp_path):
    a, b = _start(tmp_path, "0,1", 3), _start(tmp_path, "0,1", 3)
    (ga, ta), (gb, tb) = _got(a), _got(b)
    assert {ga, gb} == {"0", "1"} and abs(ta - tb) < 2.5  # both at once: neither waited for the other
    assert a.wait() == 0 and b.wait() == 0


def test_with_one_slot_the_second_waits_until_the_first_exits(tmp_path):
    first = _start(tmp_path, "3", 60)
    gpu, _ = _got(first)
    assert gpu == "3"
    second = _start(tmp_path, "3", 0)
    time.sleep(3)
    assert second.poll() is None  # still waiting for the slot
    killed = time.time()
    first.kill()  # SIGKILL: the kernel drops the lock with the process
    first.wait()
    gpu2, at = _got(second)
    assert gpu2 == "3" and at >= killed
    assert second.wait() == 0


def test_no_lock_folder_claims_nothing(monkeypatch):
    from metareward.pipeline import gpu_slots

    monkeypatch.delenv(gpu_slots.ENV, raising=False)
    assert gpu_slots.claim_from_env(1) is None
