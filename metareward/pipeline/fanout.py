"""A GPU stage as processes of its own on this machine: ``R`` replicas of a sharded stage at once, each given its
GPUs (``CUDA_VISIBLE_DEVICES``) or its share of the CPU cores, then one merge; any other GPU stage as one process.

Each process runs ``python -m metareward stage STAGE RUN --iter T`` (`metareward.cli`), so its engine's memory
goes back to the system when it exits, before the next stage (DPO after vLLM) starts. A replica's progress
comes back as JSON lines on its stdout and moves the caller's bars; its log lines are relayed to this process's
log; a replica that fails names its last log lines.

    >>> replica_env(1, 2, gpus=[0, 1, 2, 3], per_replica=2, cores=16)
    {'CUDA_VISIBLE_DEVICES': '2,3', 'OMP_NUM_THREADS': '8'}
    >>> replica_env(0, 2, gpus=[], per_replica=1, cores=2)
    {'CUDA_VISIBLE_DEVICES': '', 'OMP_NUM_THREADS': '1'}
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Sequence

from metareward import progress
from metareward.config import RunConfig
from metareward.pipeline.contract import StageError
from metareward.registry import stage as spec
from metareward.runstore.layout import RunLayout

log = logging.getLogger("metareward")
PROGRESS_PREFIX = "metareward-progress "  # a stdout line the parent reads as a progress event
TAIL = 20  # log lines kept to explain a failed replica


def replica_count(cfg: RunConfig, gpus: int) -> int:
    """``engine.replicas``, or one replica per ``engine.tensor_parallel_size`` GPUs (every GPU for 0), one on a
    CPU."""
    if cfg.engine.replicas > 0:
        return cfg.engine.replicas
    tp = cfg.engine.tensor_parallel_size or max(gpus, 1)
    return max(1, gpus // tp)


def replica_env(index: int, count: int, gpus: Sequence[int], per_replica: int, cores: int) -> dict[str, str]:
    """Replica ``index`` of ``count``: its own ``per_replica`` GPUs (none on a CPU) and its share of the cores."""
    mine = gpus[index * per_replica:(index + 1) * per_replica]
    return {"CUDA_VISIBLE_DEVICES": ",".join(str(g) for g in mine), "OMP_NUM_THREADS": str(max(1, cores // count))}


def command(run_folder: str, stage: str, t: int, part: tuple[int, int] | None, key: str | None) -> list[str]:
    cmd = [sys.executable, "-m", "metareward", "stage", stage, run_folder, "--iter", str(t), "--progress-lines"]
    if part is not None:
        cmd += ["--replica", str(part[0]), "--replicas", str(part[1])]
    return cmd + (["--key", key] if key else [])


def run_processes(cfg: RunConfig, stage: str, t: int, key: str | None = None) -> None:
    """The stage in processes of its own: replicas of a sharded stage at once (the caller merges after), any
    other stage whole. Raises StageError naming every replica that failed."""
    from metareward.hardware import host_gpus, usable_cores

    gpus = host_gpus()  # the GPUs this process may hand out (CUDA_VISIBLE_DEVICES, else the host's)
    count = replica_count(cfg, len(gpus)) if spec(stage).sharded else 1
    if gpus and count * max(cfg.engine.tensor_parallel_size, 1) > len(gpus):
        raise StageError(f"{stage} iter {t}: engine.replicas={count} x tensor_parallel_size="
                         f"{cfg.engine.tensor_parallel_size} needs more than the {len(gpus)} GPUs visible here")
    per = (cfg.engine.tensor_parallel_size or len(gpus)) if gpus else 0
    cores = usable_cores()
    from metareward.pipeline.calls import save_config

    save_config(cfg)  # the processes read the run's config from the store: this call's, exactly
    run_folder = RunLayout.of(cfg).run
    procs = []
    for r in range(count):
        env = {**os.environ, **(replica_env(r, count, gpus, per, cores) if count > 1 or gpus else {})}
        part = (r, count) if count > 1 else None
        procs.append(_Replica(command(run_folder, stage, t, part, key), env, f"{stage} iter {t}", f"replica {r}"))
    codes = [p.wait() for p in procs]
    failed = [p for p, code in zip(procs, codes) if code != 0]
    if failed:
        text = (f"{stage} iter {t}: {len(failed)} of {count} stage processes failed; finished shards are kept for "
                "the rerun. " + " | ".join(p.describe() for p in failed))
        # exit 2: the command refused its input or settings (a retry fails alike); anything else may pass next time
        raise (StageError if all(p.proc.returncode == 2 for p in failed) else StageProcessFailed)(text)


class StageProcessFailed(RuntimeError):
    """A stage process died (a signal, out of memory, a crash): worth a retry; finished shards are kept."""


class _Replica:
    """One stage process: started at once; its stdout's progress lines and stderr's log lines relayed by threads
    (listeners are called from those threads' copies of the caller's context)."""

    def __init__(self, cmd: list[str], env: dict[str, str], stage: str, replica: str):
        import contextvars

        self.name, self.replica, self.tail = f"{stage} {replica}", replica, deque(maxlen=TAIL)
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     bufsize=1)
        ctx = contextvars.copy_context()
        self.threads = [threading.Thread(target=ctx.copy().run, args=(fn, stream), daemon=True)
                        for fn, stream in ((self._progress, self.proc.stdout), (self._log, self.proc.stderr))]
        for th in self.threads:
            th.start()

    def _progress(self, stream) -> None:
        for line in stream:
            if line.startswith(PROGRESS_PREFIX):
                event = json.loads(line[len(PROGRESS_PREFIX):])
                progress.relay(f"{event['label']} ({self.replica})", event["done"], event["total"])
            else:
                self._keep(line)

    def _log(self, stream) -> None:
        for line in stream:
            self._keep(line)

    def _keep(self, line: str) -> None:
        """A line of the process's output: into this process's log, and the tail that explains a failure."""
        if line.strip():
            self.tail.append(line.rstrip())
            log.info("[%s] %s", self.name, line.rstrip())

    def wait(self) -> int:
        code = self.proc.wait()
        for th in self.threads:
            th.join()
        return code

    def describe(self) -> str:
        last = "; ".join(list(self.tail)[-3:]) or "no output"
        return f"{self.name} exited {self.proc.returncode} ({last})"
