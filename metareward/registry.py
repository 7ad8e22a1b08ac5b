"""Every stage of a run, declared once: what it reads, what its key digests, where it runs, whether it shards.

The flows, the tasks, the stage command, the stage keys, `metareward status`, the report and the out-of-memory
advice all read this table instead of listing stages themselves (torchtune's recipe registry is the model). Data
only: the stage functions are named by import path and resolved by `metareward.pipeline.calls`, so this module
sits at the bottom of the library and every layer may read it.

    >>> [s.name for s in STAGES.values() if s.sharded]
    ['generate', 'judge', 'meta_judge', 'answers']
    >>> STAGES["judge"].inputs, STAGES["judge"].model
    (('generate',), 'previous')
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# The pipeline's own modules are part of every key.
PIPELINE = ("pipeline.contract", "pipeline.modelrefs", "pipeline.roles", "pipeline.stages")
# An engine's modules decide sampled texts as much as the model does, so a stage that runs one digests those of the
# backend it runs (engine.backend; `code_of`): a change to the CPU engine does not re-key a vLLM run's stages.
ENGINE_CODE: dict[str, tuple[str, ...]] = {
    "transformers": ("engines", "engines.base", "engines.transformers_engine", "engines.choice_scoring",
                     "engines.decoding", "engines.shared_prefix", "engines.tokens", "hardware"),
    "vllm": ("engines", "engines.base", "engines.vllm_engine", "engines.tokens"),
    "fake": ("engines", "engines.base", "engines.fake", "method.prompts"),
}
ENGINE_STAGES = ("runstore.shards",)  # what every stage that runs an engine digests, whatever the backend
# what reads the benchmark items and asks for their answers (the answers stage), and what scores them (benchmark)
ANSWERS = ("pipeline.answers", "evals.harness", "evals.mtbench", "evals.alpaca", "evals.arena_hard", "evals.ifeval",
           "evals.llmbar", "evals.io")
EVALS = ("pipeline.benchmark", "pipeline.scored", "pipeline.drift_guard", "pipeline.answers", "evals.harness",
         "evals.judges", "evals.mtbench", "evals.alpaca", "evals.arena_hard", "evals.agreement", "evals.io",
         "evals.ifeval", "evals.llmbar", "intervals")
PROMPT_INPUTS = ("inputs.prompt_sets", "inputs.prompt_sources", "inputs.dedupe", "inputs.decontam")


@dataclass(frozen=True)
class Stage:
    """One stage. ``inputs``: the stages of the same iteration whose manifests it reads, in call order;
    ``model``: the model it runs (``previous`` = M_{t-1}, ``current`` = M_t, ``seed`` = the seed model before EFT,
    ``none``); ``sections``: the config it reads (its key digests them); ``code``: modules under ``metareward.``
    whose source its key digests; ``device``: ``gpu`` stages run in a process of their own (the stage command, a
    deployment run); ``sharded``: its work is cut into shards that replicas compute at once; ``samples``: the
    config field giving the samples per work item (the spacing of the per-sample seeds). A stage with
    ``engine=True`` also digests its backend's modules (`ENGINE_CODE`, through `code_of`)."""

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
          code=("pipeline.bootstrap", "inputs.prompt_pool", *PROMPT_INPUTS, *ENGINE_STAGES)),
    Stage("eft", "metareward.pipeline.bootstrap:eft", model="seed", iteration0=True,
          sections=("eft", "judge", "engine", "model"),
          code=("pipeline.bootstrap", "inputs.eft", "training.sft", "method.parsing", "method.prompts",
                "method.scoring", *ENGINE_STAGES)),
    # one iteration, M_{t-1} -> M_t
    Stage("prompts", "metareward.pipeline.stages:prompts", model="none", device="cpu", engine=False,
          sections=("prompts",), code=PROMPT_INPUTS),
    Stage("generate", "metareward.pipeline.stages:generate", inputs=("prompts",), sharded=True, samples="actor.k",
          sections=("actor", "engine", "model"), code=ENGINE_STAGES),
    Stage("judge", "metareward.pipeline.stages:judge", inputs=("generate",), sharded=True, samples="judge.n",
          sections=("judge", "engine", "model"),
          code=(*ENGINE_STAGES, "method.parsing", "method.prompts", "method.scoring")),
    # l2 and position_weights are read by the pairs stage only: changing them must not re-run the meta-judge
    Stage("meta_judge", "metareward.pipeline.stages:meta_judge", inputs=("generate", "judge"), sharded=True,
          sections=("meta_judge.sampling", "meta_judge.scoring", "meta_judge.strip_score", "engine", "model"),
          code=(*ENGINE_STAGES, "method.parsing", "method.prompts", "method.pairs", "method.scoring")),
    Stage("pairs", "metareward.pipeline.stages:pairs", inputs=("generate", "judge", "meta_judge"),
          model="none", device="cpu", engine=False, sections=("pairs", "meta_judge"),
          code=("method.pairs", "method.scoring", "method.prompts")),
    Stage("train", "metareward.pipeline.stages:train", inputs=("pairs",), engine=False, sections=("dpo", "model"),
          code=("training.dpo",)),
    # the benchmark: M_t's greedy answers to every benchmark item, sharded like generate; then their scoring, the
    # evaluator judges and the drift guard's (M_{t-1}'s answers come from the benchmark of iteration t-1)
    Stage("answers", "metareward.pipeline.stages:answers", inputs=("prompts",), model="current", sharded=True,
          sections=("eval", "engine", "model"), code=(*ENGINE_STAGES, *ANSWERS)),
    Stage("benchmark", "metareward.pipeline.stages:benchmark", inputs=("prompts", "answers"), model="current",
          sections=("eval", "judge", "engine", "model", "health.drift.enabled", "health.drift.reference_judge"),
          code=(*ENGINE_STAGES, "method.parsing", "method.prompts", "method.scoring", "method.drift", *EVALS)),
)}

ITERATION = tuple(s.name for s in STAGES.values() if not s.iteration0)
BOOTSTRAP = tuple(s.name for s in STAGES.values() if s.iteration0)


def code_of(name: str, backend: str) -> tuple[str, ...]:
    """The modules under ``metareward.`` the key of stage ``name`` digests besides `PIPELINE`: its own and, when it
    runs an engine, those of ``backend``.

    >>> "engines.vllm_engine" in code_of("generate", "vllm"), "engines.decoding" in code_of("generate", "vllm")
    (True, False)
    >>> code_of("train", "vllm") == stage("train").code
    True
    """
    s = stage(name)
    if not s.engine:
        return s.code
    if backend not in ENGINE_CODE:
        raise KeyError(f"unknown engine backend {backend!r}; expected one of {', '.join(ENGINE_CODE)}")
    return (*s.code, *ENGINE_CODE[backend])


def stage(name: str) -> Stage:
    """The stage called ``name``; an unknown name is an error that lists the known ones."""
    if name not in STAGES:
        raise KeyError(f"unknown stage {name!r}; stages: {', '.join(STAGES)}")
    return STAGES[name]
