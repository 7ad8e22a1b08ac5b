"""The stage flow: one GPU stage of a stored run (or one replica's shards of it), as a flow run of its own, which
the pools' ``stage`` deployments expose (execution.mode=deployments; deployments/prefect.yaml).

The orchestrating flow (on the `local` pool) reaches a stage through `tasks.launch.run_deployments`, which starts
``engine.replicas`` runs of ``stage/<execution.stage_deployment>`` for a sharded stage (one otherwise) and merges
their shards itself. A run is ``metareward stage`` in a flow: it reads the run's config from the run folder
(``config.json``, saved by the launcher), claims its GPUs on a shared host (`metareward.pipeline.gpu_slots`, when
METAREWARD_GPU_SLOTS names the lock folder) and runs the stage from the store (`metareward.pipeline.calls`).
Only the run folder, the stage, the iteration, the replica and the stage key cross the boundary; data and models
travel through the run store (``s3://`` in production).

    prefect deploy --all --prefect-file deployments/prefect.yaml       # stage/gpu, stage/docker-cpu, stage/local
    metareward run smoke storage.root=s3://bucket/runs execution.mode=deployments
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

from prefect import flow

from metareward.config import RunConfig
from metareward.runstore import remote
from metareward.runstore.layout import RunLayout

log = logging.getLogger(__name__)


def result_storage(cfg: RunConfig):
    """Where Prefect keeps its cache records: beside the run's data (a folder, or a saved RemoteFileSystem block
    on an ``s3://`` store; the block holds the base path and the request timeouts only, credentials stay in the
    environment)."""
    basepath = RunLayout.of(cfg).results
    if not remote.is_remote(basepath):
        return Path(basepath)
    from prefect.filesystems import RemoteFileSystem

    t = cfg.storage.timeout_s  # Prefect's requests wait no longer than ours; s3fs still tries each up to 5 times
    settings = {"config_kwargs": {"connect_timeout": t, "read_timeout": t, "retries": {"total_max_attempts": 1}}} \
        if basepath.startswith("s3") else {}
    name = "metareward-results-" + hashlib.sha256(basepath.encode()).hexdigest()[:12]
    try:
        block = RemoteFileSystem.load(name)
        if block.basepath == basepath and block.settings == settings:
            return block
    except ValueError:  # not saved yet
        pass
    block = RemoteFileSystem(basepath=basepath, settings=settings)
    block.save(name, overwrite=True)
    return block


@flow(name="stage", result_serializer="json")
def stage(run: str, stage: str, t: int, replica: int | None = None, replicas: int = 1,
          key: str | None = None) -> str | None:
    """Stage ``stage`` of iteration ``t`` of the run stored in ``run`` (its folder or URI): the whole stage, or
    replica ``replica`` of ``replicas``'s shards only. Refuses to run unless its stage key is ``key`` (when given).
    Returns the manifest's URI, or None for a replica (the launcher merges)."""
    from metareward.pipeline import calls, contract, gpu_slots
    from metareward.runstore.shards import Part

    cfg = calls.stored_config(run)
    gpu_slots.claim_from_env(cfg.engine.tensor_parallel_size)  # before any engine starts; held until we exit
    mode = Part(replica, replicas) if replica is not None else None
    log.info("%s iter %d: %s", stage, t, f"replica {replica} of {replicas}" if mode else "whole stage")
    with contract.launching(None, expected_key=key):
        m = calls.run(cfg, stage, t, mode)
    return m.uri if m is not None else None
