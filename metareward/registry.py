"""Every stage of a run, declared once: what it reads, what its key digests, where it runs, whether it shards.

The flows, the tasks, the stage command, the stage keys, `metareward status`, the report and the out-of-memory
advice all read this table instead of listing stages themselves (torchtune's recipe registry is the model). Data
only: the stage functions are named by import path and resolved by `metareward.pipeline.calls`, so this module
sits at the bottom of the library and every layer may read it.

    >>> [s.name for s in STAGES.values() if s.sharded]
    ['generate', 'judge', 'meta_judge']
    >>> STAGES["judge"].inputs, STAGES["judge"].model
    (('generate',), 'previous')
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# The pipeline's own modules are part of every key; the engine's modules decide sampled texts as much as the
# engine does, so the stages that run one digest them all.
PIPELINE = ("pipeline.contract", "pipeline.modelrefs", "pipeline.roles", "pipeline.stages")
ENGINES = ("engines.transformers_engine", "engines.choice_scoring", "engines.decoding", "engines.shared_prefix",
           "engines.tokens", "engines.vllm_engine", "engines.fake", "runstore.shards")
EVALS = ("pipeline.benchmark", "evals.bench", "evals.judges", "evals.mtbench", "evals.alpaca", "evals.arena_hard",
         "evals.agreement", "evals.io")
PROMPT_INPUTS = ("inputs.prompt_sets", "inputs.prompt_sources", "inputs.dedupe", "inputs.decontam")


@dataclass(frozen=True)
class Stage:
    """One stage. ``inputs``: the stages of the same iteration whose manifests it reads, in call order;
    ``model``: the model it runs (``previous`` = M_{t-1}, ``current`` = M_t, ``seed`` = the seed model before EFT,
    ``none``); ``sections``: the config it reads (its key digests them); ``code``: modules under ``metareward.``
    whose source its key digests; ``device``: ``gpu`` stages run in a process of their own (the stage command, a
    deployment run); ``sharded``: its work is cut into shards that replicas compute at once; ``samples``: the
    config field giving the samples per work item (the spacing of the per-sample seeds)."""

    name: str
    function: str
    inputs: tuple[str, ...] = ()
    model: Literal["previous", "current", "seed", "none"] = "previous"
    sections: tuple[str, ...] = ()
    code: tuple[str, ...] = ()
    device: Literal["gpu", "cpu"] = "gpu"
    sharded: bool = False
    engine: bool = True
    iteration0: bool = False
    samples: str | None = None

    @property
    def task(self) -> str:
        """The Prefect task's name and the stage folder's: the stage's name."""
        return self.name


STAGES: dict[str, Stage] = {s.name: s for s in (
    # before iteration 1, as iteration 0 (metareward/pipeline/bootstrap.py)
    Stage("prompt_pool", "metareward.pipeline.bootstrap:prompt_pool", model="seed", iteration0=True,
          sections=("prompt_pool", "prompts", "engine", "model"),
          code=("pipeline.bootstrap", "inputs.prompt_pool", *PROMPT_INPUTS, *ENGINES)),
    Stage("eft", "metareward.pipeline.bootstrap:eft", model="seed", iteration0=True,
          sections=("eft", "judge", "engine", "model"),
          code=("pipeline.bootstrap", "inputs.eft", "training.sft", "method.parsing", "method.prompts", *ENGINES)),
    # one iteration, M_{t-1} -> M_t
    Stage("prompts", "metareward.pipeline.stages:prompts", model="none", device="cpu", engine=False,
          sections=("prompts",), code=PROMPT_INPUTS),
    Stage("generate", "metareward.pipeline.stages:generate", inputs=("prompts",), sharded=True, samples="actor.k",
          sections=("actor", "engine", "model"), code=ENGINES),
    Stage("judge", "metareward.pipeline.stages:judge", inputs=("generate",), sharded=True, samples="judge.n",
          sections=("judge", "engine", "model"), code=(*ENGINES, "method.parsing", "method.prompts")),
    # l2 and position_weights are read by the pairs stage only: changing them must not re-run the meta-judge
    Stage("meta_judge", "metareward.pipeline.stages:meta_judge", inputs=("generate", "judge"), sharded=True,
          sections=("meta_judge.sampling", "meta_judge.scoring", "meta_judge.strip_score", "engine", "model"),
          code=(*ENGINES, "method.parsing", "method.prompts", "method.pairs")),
    Stage("pairs", "metareward.pipeline.stages:pairs", inputs=("generate", "judge", "meta_judge"),
          model="none", device="cpu", engine=False, sections=("pairs", "meta_judge"),
          code=("method.pairs", "method.scoring", "method.prompts")),
    Stage("train", "metareward.pipeline.stages:train", inputs=("pairs",), engine=False, sections=("dpo", "model"),
          code=("training.dpo",)),
    Stage("benchmark", "metareward.pipeline.stages:benchmark", inputs=("prompts",), model="current",
          sections=("eval", "judge", "engine", "model"),
          code=(*ENGINES, "method.parsing", "method.prompts", *EVALS)),
)}

ITERATION = tuple(s.name for s in STAGES.values() if not s.iteration0)
BOOTSTRAP = tuple(s.name for s in STAGES.values() if s.iteration0)


def stage(name: str) -> Stage:
    """The stage called ``name``; an unknown name is an error that lists the known ones."""
    if name not in STAGES:
        raise KeyError(f"unknown stage {name!r}; stages: {', '.join(STAGES)}")
    return STAGES[name]
