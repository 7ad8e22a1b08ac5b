"""`python tests/flows/crash_driver.py run|resume ...`: the `metareward` CLI entry point as the crash test runs it.

Three test-only changes, installed before `flows.cli.main()` (the `metareward` command) runs:
- DPO training is a stand-in (TRL on a real model would take minutes): after a short sleep it writes a tiny model
  folder (config.json, then model.safetensors in chunks over 4 x CRASH_DELAY, straight to the final names as
  save_pretrained does) whose content depends on the pairs, beta and the parent model;
- every fake-engine call sleeps CRASH_DELAY seconds, so the kills land inside stages and between shards;
- an event log (CRASH_LOG, appended and fsync'ed): `start <name> <t>` when a stage starts computing,
  `stage <name> <t>` after each manifest is written, `shard <path>` after each shard file is committed;
  CRASH_READY is created when a stage starts computing (not when a finished stage is skipped), so a kill timed
  from it lands in real work.

`install` is idempotent; tests/flows/standins/sitecustomize.py calls it in every Python process of a run (stage
processes and replicas included) when that folder is on PYTHONPATH.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from pathlib import Path


def _event(line: str) -> None:
    fd = os.open(os.environ["CRASH_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def save_weights(output_dir: str, digest: str, seconds: float) -> None:
    """A 1 MiB safetensors file of weights drawn from ``digest``, written in 4 chunks over ``seconds``."""
    import numpy as np
    from safetensors.numpy import save

    rng = np.random.default_rng(int(digest[:16], 16))
    data = save({"w": rng.standard_normal((256, 1024), dtype=np.float32)}, metadata={"format": "pt"})
    step = len(data) // 4 + 1
    with open(Path(output_dir, "model.safetensors"), "wb") as f:
        for i in range(0, len(data), step):
            f.write(data[i:i + step])
            f.flush()
            time.sleep(seconds / 4)


def install() -> None:
    import metareward.training.dpo
    from metareward.runstore import store
    from metareward.engines.fake import FakeEngine

    if getattr(store, "_crash_driver_installed", False):
        return
    store._crash_driver_installed = True
    delay = float(os.environ.get("CRASH_DELAY", "0"))

    def train_dpo(pairs, model_path, output_dir, dpo, **kw):
        time.sleep(2 * delay)
        parent = Path(model_path, "config.json").read_bytes()
        data = "\n".join(p.model_dump_json() for p in pairs) + repr(dpo.beta)
        config = {"model_type": "fake", "pairs": hashlib.sha256(data.encode()).hexdigest(),
                  "parent": hashlib.sha256(parent).hexdigest()}
        Path(output_dir).mkdir(parents=True, exist_ok=True)
        Path(output_dir, "config.json").write_text(json.dumps(config, sort_keys=True) + "\n")
        save_weights(output_dir, hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest(), 4 * delay)
        return {"steps": 1, "train_loss": 0.69, "n_pairs": len(pairs), "log_history": [{"loss": 0.69}]}

    metareward.training.dpo.train_dpo = train_dpo

    for name in ("generate", "choice_probs"):
        def slow(self, *a, _orig=getattr(FakeEngine, name), **kw):
            time.sleep(delay)
            return _orig(self, *a, **kw)
        setattr(FakeEngine, name, slow)

    write_manifest, write_jsonl, invalidate = store.write_manifest, store.write_jsonl, store.invalidate

    def logged_manifest(m):
        write_manifest(m)
        _event(f"stage {m.stage} {m.iteration}")

    def logged_jsonl(uri, rows):
        digest = write_jsonl(uri, rows)
        if "/shards/" in uri:
            _event("shard " + uri.split("/iter_", 1)[1])
        return digest

    def ready_invalidate(folder):  # `execute` calls it right before computing a stage
        Path(os.environ["CRASH_READY"]).touch()
        stage, t = folder.rstrip("/").rsplit("/", 2)[-1], folder.rstrip("/").rsplit("/", 2)[-2].removeprefix("iter_")
        _event(f"start {stage} {t}")
        return invalidate(folder)

    store.write_manifest, store.write_jsonl, store.invalidate = logged_manifest, logged_jsonl, ready_invalidate


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    install()
    from flows.cli import main

    sys.argv = ["metareward", *sys.argv[1:]]
    main()
