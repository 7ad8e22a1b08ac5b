"""The benchmark stage's config (``eval.*``) and the drift guard's (``health.drift``): which measures run on M_0 and
each M_t, with which evaluator judge. Part of `metareward.config` (which re-exports every name), kept apart so
neither module runs past a reader's patience.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from metareward.config_base import Section as _Section


class EvalJudgeSection(_Section):
    """The evaluator judge of one benchmark (metareward.evals.judges)."""

    kind: Literal["local", "openai"] = Field(
        "local", description="'openai': any OpenAI-compatible /chat/completions endpoint (OpenAI, a vLLM server). "
        "'local': one of our engines (engine.backend).")
    model: str | None = Field(
        None, description="openai: the model name (the reference judges: gpt-4 for MT-Bench, gpt-4-1106-preview "
        "for AlpacaEval 2 and Arena-Hard). local: None = the seed model M_0 (one judge for every iteration), "
        "'self' = the model being evaluated, or a model folder.")
    base_url: str = Field("https://api.openai.com/v1", description="openai: the endpoint's base URL.")
    api_key_env: str = Field("OPENAI_API_KEY", description="openai: the environment variable holding the API key "
                             "(read at call time; never stored).")
    scoring: Literal["parse", "expected"] = Field(
        "parse", description="local MT-Bench judge: 'parse' reads the written [[rating]] (the harness); 'expected' "
        "forces 'Rating: [[' and takes the expected rating 1-10 (small models that write no rating).")
    max_tokens: int = Field(1024, ge=1, description="Length of the judge's written judgment.")
    timeout_s: float = Field(120.0, gt=0, description="openai: seconds per request.")
    max_retries: int = Field(5, ge=0, description="openai: retries on rate limits, 5xx and network errors.")

    @model_validator(mode="after")
    def _openai_needs_model(self) -> EvalJudgeSection:
        if self.kind == "openai" and not self.model:
            raise ValueError("an 'openai' judge needs a model name")
        return self


class MTBenchSection(_Section):
    enabled: bool = Field(False, description="Run MT-Bench (FastChat single-answer grading) in the benchmark stage.")
    questions: str | None = Field(
        None, description="FastChat question.jsonl, or 'hf:<dataset>[:<split>]'. None = 3 hand-written 2-turn "
        "questions shipped for smoke runs (not the benchmark).")
    reference_answers: str | None = Field(
        None, description="FastChat reference_answer/<judge>.jsonl for math/reasoning/coding. None = each "
        "question's own 'reference' field.")
    max_new_tokens: int = Field(1024, ge=1, description="Answer length per turn.")
    judge: EvalJudgeSection = Field(default_factory=EvalJudgeSection)


class AlpacaEvalSection(_Section):
    enabled: bool = Field(False, description="Run AlpacaEval 2 (pairwise against reference outputs).")
    references: str | None = Field(
        None, description="Reference outputs {instruction, output, generator} (JSON list or JSONL), or "
        "'hf:tatsu-lab/alpaca_eval:eval'. None = 4 hand-written instructions shipped for smoke runs.")
    max_new_tokens: int = Field(1024, ge=1, description="Answer length.")
    judge: EvalJudgeSection = Field(default_factory=EvalJudgeSection)
    difficulty_path: str | None = Field(None, description="alpaca_eval's instruction_difficulty.csv (local copy) "
                                        "for the official length-controlled win rate.")
    gamed_path: str | None = Field(None, description="alpaca_eval's df_gamed.csv (local copy), idem.")


class ArenaHardSection(_Section):
    enabled: bool = Field(False, description="Run Arena-Hard v0.1 (two games per prompt against the baseline).")
    questions: str | None = Field(None, description="arena-hard-auto question.jsonl (needed when enabled).")
    baseline_answers: str | None = Field(None, description="model_answer/gpt-4-0314.jsonl (needed when enabled).")
    max_new_tokens: int = Field(4096, ge=1, description="Answer length.")
    bootstrap_rounds: int = Field(100, ge=1, description="Bootstrap rounds for the 95% interval (v0.1: 100).")
    judge: EvalJudgeSection = Field(default_factory=EvalJudgeSection)

    @model_validator(mode="after")
    def _files(self) -> ArenaHardSection:
        if self.enabled and not (self.questions and self.baseline_answers):
            raise ValueError("arena_hard needs questions and baseline_answers when enabled")
        return self


class JudgeQualitySection(_Section):
    labels: str | None = Field(
        None, description="JSONL {id, prompt, response_a, response_b, label a|b|tie}: the model's own judge is "
        "scored against these labels each iteration. None = skipped.")
    tie_margin: float = Field(0.0, ge=0.0, description="Own-judge scores closer than this count as a tie.")


class IFEvalSection(_Section):
    """IFEval (Zhou et al. 2023): instructions whose following is checked by code, so no judge is paid."""

    enabled: bool = Field(False, description="Answer IFEval's prompts with M_0 and each M_t and score them with "
                          "the official checkers (strict and loose; metareward.evals.ifeval).")
    prompts: str | None = Field(
        None, description="IFEval's input_data.jsonl ({key, prompt, instruction_id_list, kwargs}) or a hub id "
        "('google/IFEval', downloaded unless cached). None = 12 hand-written prompts in IFEval's format shipped for "
        "smoke runs (a plumbing check, not the benchmark).")
    limit: int | None = Field(None, ge=1, description="Score the first this-many prompts only (None = all 541).")
    max_new_tokens: int = Field(1280, ge=1, description="Answer length (lm-eval's ifeval task: 1280), greedy, "
                                "through the chat template.")


class LLMBarSection(_Section):
    """LLMBar (Zeng et al. 2023): pairs whose better output is known; the run's own judge (M_0, each M_t) picks one
    in both orders, scored as LLMBar scores it (accuracy = the two orders' mean; agreement = same winner twice)."""

    enabled: bool = Field(False, description="Judge LLMBar-format pairs with the evaluated model in the benchmark "
                          "stage (metareward.evals.llmbar).")
    sets: dict[str, str] | None = Field(
        None, description="Set name -> LLMBar dataset.json ({input, output_1, output_2, label}), e.g. "
        "{Natural: LLMBar/Dataset/LLMBar/Natural/dataset.json, Neighbor: ...}. None = LLMBar's Natural set "
        "(100 pairs, shipped).")
    limit: int | None = Field(None, ge=1, description="Judge the first this-many pairs of each set (None = all).")
    scoring: Literal["parse", "expected"] = Field(
        "parse", description="'parse': LLMBar's Vanilla prompt, the verdict written and read with LLMBar's rule "
        "(unparsed = wrong). 'expected': P('a') vs P('b') after a forced 'Output (' (ours, for small models that "
        "write no verdict; labelled so).")
    max_new_tokens: int = Field(32, ge=1, description="'parse': length of the written verdict.")


class DriftSection(_Section):
    """The guard against a self-judge that drifts: M_t's own judge and a fixed reference judge score the same
    held-out answers of M_{t-1} and M_t (metareward.method.drift)."""

    enabled: bool = Field(True, description="Measure drift in the benchmark stage of every iteration (needs "
                          "eval.enabled) and stop the run at the gates below (health.enabled).")
    reference_judge: EvalJudgeSection = Field(
        default_factory=EvalJudgeSection, description="The fixed judge: local (None = M_0, the default; or a model "
        "folder) with the run's own judge prompt and judge.scoring, or an 'openai' endpoint reading 'Score: N'.")
    k: int = Field(2, ge=1, description="Stop when the own judge's mean score rose while the reference's fell in "
                   "this many iterations in a row (each change beyond min_change at the 95% level: the low end of "
                   "its bootstrap interval over prompts for the rise, the high end for the fall).")
    min_change: float = Field(0.0, ge=0.0, description="A mean score moving by at most this counts as neither "
                              "rising nor falling.")
    max_self_preference_excess: float = Field(
        0.25, ge=-1.0, le=1.0, description="Stop when the own judge prefers M_t's answer to M_{t-1}'s this much more "
        "often than the reference judge does (shares of held-out prompts, ties counting half), at the 95% level: "
        "the low end of the excess's bootstrap interval over prompts, so a few noisy prompts trip nothing.")

    @model_validator(mode="after")
    def _fixed_reference(self) -> DriftSection:
        if self.reference_judge.kind == "local" and self.reference_judge.model == "self":
            raise ValueError("reference_judge.model 'self' is the own judge; the reference must stay fixed (None = "
                             "M_0, or a model folder)")
        return self


class EvalSection(_Section):
    enabled: bool = Field(True, description="Run the benchmark stage after training.")
    max_new_tokens: int = Field(256, ge=1, description="Answer length on the held-out prompts.")
    mt_bench: MTBenchSection = Field(default_factory=MTBenchSection)
    alpaca_eval: AlpacaEvalSection = Field(default_factory=AlpacaEvalSection)
    arena_hard: ArenaHardSection = Field(default_factory=ArenaHardSection)
    judge_quality: JudgeQualitySection = Field(default_factory=JudgeQualitySection)
    ifeval: IFEvalSection = Field(default_factory=IFEvalSection)
    llmbar: LLMBarSection = Field(default_factory=LLMBarSection)
