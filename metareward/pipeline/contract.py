"""The run-store contract every stage goes through: (config, t, inputs) -> Manifest, runnable without Prefect.

1. the stage's *key* is a digest of its inputs' digests, the config sections it reads and its code;
2. if ``<run>/iter_<t>/<stage>/manifest.json`` exists with that key, the stage is done: return it;
3. otherwise drop any old manifest, compute, write the data, then write the manifest last.

So a rerun skips finished work even without Prefect's cache, and a crash never leaves a stage marked done.
A stage's code enters its key as a digest of the code itself (`metareward.runstore.code`), not of file paths:
moving a module keeps every key.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata

from metareward import progress
from metareward.config import RunConfig, schedule
from metareward.records import Manifest
from metareward.runstore import shards, store
from metareward.runstore.code import code_digest as _digest_of

log = logging.getLogger("metareward")

# The config sections each stage reads: changing dpo.beta re-keys train and what follows, nothing before it.
SECTIONS = {
    "prompts": ("prompts",),
    "generate": ("actor", "engine", "model"),
    "judge": ("judge", "engine", "model"),
    # l2 and position_weights are read by the pairs stage only: changing them must not re-run the meta-judge
    "meta_judge": ("meta_judge.sampling", "meta_judge.scoring", "meta_judge.strip_score", "engine", "model"),
    "pairs": ("pairs", "meta_judge"),
    "train": ("dpo", "model"),
    "benchmark": ("eval", "judge", "engine", "model"),
    # run once before iteration 1 (iteration-0 folder): see metareward/pipeline/bootstrap.py
    "prompt_pool": ("prompt_pool", "prompts", "engine", "model"),
    "eft": ("eft", "judge", "engine", "model"),
}
# The modules whose code is part of a stage's key (names under metareward.), so a code change recomputes what it
# affects. The engines include the CPU engine's decode loop and attention: they decide the sampled texts as much
# as the engine does. The pipeline's own modules (PIPELINE) are part of every key.
PIPELINE = ("pipeline.contract", "pipeline.modelrefs", "pipeline.roles", "pipeline.stages")
ENGINES = ("engines.transformers_engine", "engines.choice_scoring", "engines.decoding", "engines.shared_prefix",
           "engines.tokens", "engines.vllm_engine", "engines.fake")
CODE = {
    "prompts": ("inputs.prompt_sets", "inputs.prompt_sources", "inputs.dedupe", "inputs.decontam"),
    "prompt_pool": ("pipeline.bootstrap", "inputs.prompt_pool", "inputs.prompt_sets", "inputs.prompt_sources",
                    "inputs.dedupe", "inputs.decontam", *ENGINES),
    "eft": ("pipeline.bootstrap", "inputs.eft", "training.sft", "method.parsing", "method.prompts", *ENGINES),
    "generate": ENGINES,
    "judge": (*ENGINES, "method.parsing", "method.prompts"),
    "meta_judge": (*ENGINES, "method.parsing", "method.prompts", "method.pairs"),
    "pairs": ("method.pairs", "method.scoring", "method.prompts"),
    "train": ("training.dpo",),
    "benchmark": (*ENGINES, "method.parsing", "method.prompts", "pipeline.benchmark", "evals.bench", "evals.judges",
                  "evals.mtbench", "evals.alpaca", "evals.arena_hard", "evals.agreement", "evals.io"),
}
VERSIONED = ("torch", "transformers", "trl", "vllm", "prefect", "pydantic")


class StageError(RuntimeError):
    """A stage that cannot produce its output (e.g. no preference pair survived); names the stage."""


@dataclass
class Output:
    """What a stage body returns; `execute` turns it into the Manifest."""

    files: dict[str, str] = field(default_factory=dict)
    digests: dict[str, str] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    stats: dict = field(default_factory=dict)

    def add(self, name: str, uri: str, digest: str) -> None:
        """A file the stage wrote, with its digest."""
        self.files[name], self.digests[name] = uri, digest

    def merge(self, other: Output) -> None:
        for mine, theirs in ((self.files, other.files), (self.digests, other.digests), (self.counts, other.counts),
                             (self.stats, other.stats)):
            mine.update(theirs)


# ----------------------------------------------------------------------------------------------- keys


def code_digest(stage: str) -> str:
    """The digest of the code a stage runs: `PIPELINE` and the stage's `CODE` modules, by content."""
    return _digest_of(f"metareward.{m}" for m in (*PIPELINE, *CODE[stage]))[:16]


def stage_key(stage: str, cfg: RunConfig, t: int, inputs: dict[str, str]) -> str:
    """The digest that decides whether a stage's stored output can be reused."""
    parts = [stage, str(t), str(cfg.run.seed), cfg.digest(*SECTIONS[stage]), code_digest(stage)]
    parts += [f"{k}={v}" for k, v in sorted(inputs.items())]
    if stage == "pairs":  # the per-iteration schedules are resolved here so other iterations don't re-key
        parts.append(repr(pair_settings(cfg, t)))
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


def pair_settings(cfg: RunConfig, t: int) -> dict:
    return {"rho": schedule(cfg.pairs.rho, t), "actor_max": schedule(cfg.pairs.actor_max_chosen_chars, t),
            "judge_max": schedule(cfg.pairs.judge_max_chosen_chars, t), "judge_pairs": cfg.judge_pairs_at(t)}


def _versions() -> dict[str, str]:
    out = {}
    for name in VERSIONED:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def execute(stage: str, cfg: RunConfig, t: int, inputs: dict[str, str], body: Callable[[str], Output]) -> Manifest:
    """Run ``body(stage_folder)`` unless a manifest with the same key exists; write the manifest last."""
    folder = store.stage_uri(cfg.storage.root, cfg.run.name, t, stage)
    key = stage_key(stage, cfg, t, inputs)
    done = store.read_manifest(folder)
    if done is not None and done.key == key:
        log.info("%s iter %d: done already (manifest %s), skipping", stage, t, key)
        return done
    store.invalidate(folder)
    store.remove_temporaries(folder)  # half-written files of an interrupted attempt
    log.info("%s iter %d: running", stage, t)
    start = time.perf_counter()
    try:
        with progress.stage(f"{stage} iter {t}"):
            out = body(folder)
    except Exception as e:
        from metareward.pipeline import faults

        if faults.is_oom(e):  # name the setting to lower; finished shards and stages stay for the rerun
            raise StageError(faults.oom_message(stage, t, cfg, e)) from e
        raise
    manifest = Manifest(
        stage=stage, iteration=t, run=cfg.run.name, key=key, uri=folder, files=out.files, digests=out.digests,
        counts=out.counts, stats=out.stats, inputs=inputs, config_digest=cfg.digest(), versions=_versions(),
        seed=cfg.run.seed, duration_s=round(time.perf_counter() - start, 3),
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    store.write_manifest(manifest)
    store.remove(store.join(folder, shards.SHARDS))  # scratch space of a finished stage
    return manifest


def write_rows(out: Output, folder: str, name: str, rows) -> None:
    uri = store.join(folder, f"{name}.jsonl")
    out.add(name, uri, store.write_jsonl(uri, rows))


def sharded(cfg: RunConfig, t: int, stage: str, inputs: dict[str, str], folder: str, items, work, model):
    """`shards.run_sharded` in this stage's key-named shard folder."""
    where = shards.shard_dir(folder, stage_key(stage, cfg, t, inputs))
    return shards.run_sharded(where, items, cfg.engine.shard_size, work, model, cfg.run.seed)
