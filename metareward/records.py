"""The records that flow between stages, one JSONL row each, and the per-stage `Manifest`.

Ids are hierarchical so any row can be traced back by eye: prompt ``p007`` -> response ``p007-r3`` ->
judgment ``p007-r3-j10``. A meta-verdict names its two judgments in presentation order (``a_id`` was shown as
"Judgment A").
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class Record(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Prompt(Record):
    id: str
    prompt: str


class Response(Record):
    id: str = Field(description="'<prompt_id>-r<k>'")
    prompt_id: str
    prompt: str
    text: str
    n_tokens: int = 0
    finish_reason: str | None = None


class Judgment(Record):
    id: str = Field(description="'<response_id>-j<n>'")
    response_id: str
    prompt_id: str
    text: str = Field(description="The judgment as the model would be trained on it (ends with 'Score: N').")
    score: float | None = Field(description="Parsed or expected score in [0, 5]; None = unparseable (counted).")
    score_probs: list[float] | None = Field(None, description="'expected' mode: P(0..5) after 'Score: '.")


class EvalAnswer(Record):
    """One greedy reply of the evaluated model to a benchmark item (the `answers` stage): a written answer, or for a
    choice request the likeliest choice after a forced prefix, with every choice's probability."""

    id: str = Field(description="'<benchmark>/<item id>', e.g. 'ifeval/1000', 'llmbar/Natural/3/swap'")
    text: str
    n_tokens: int = 0
    finish_reason: str | None = Field(None, description="'stop', 'length', or 'too_long' (prompt over the context: "
                                      "no answer)")
    probs: list[float] | None = None


class MetaVerdict(Record):
    prompt_id: str
    response_id: str
    a_id: str = Field(description="Judgment shown first, as 'Judgment A'.")
    b_id: str = Field(description="Judgment shown second, as 'Judgment B'.")
    text: str
    winner: Literal["A", "B"] | None = Field(description="None = tie or unparseable (counted, outcome 0).")
    p_a: float | None = Field(
        None, description="Probability that A wins: 1/0 for a parsed verdict, P(A)/(P(A)+P(B)) in 'expected' mode."
    )


class PreferencePair(Record):
    """TRL's prompt/chosen/rejected, plus where the pair came from."""

    kind: Literal["actor", "judge"]
    prompt_id: str
    prompt: str = Field(description="The user turn: the instruction (actor) or the rendered judge prompt (judge).")
    chosen: str
    rejected: str
    chosen_id: str
    rejected_id: str
    chosen_score: float
    rejected_score: float


class Manifest(BaseModel):
    """Written last into each stage folder: a stage whose manifest exists with the same key is done."""

    model_config = ConfigDict(extra="allow")

    stage: str
    iteration: int
    run: str
    key: str = Field(description="Digest of the inputs, the config sections used and the stage's code version.")
    uri: str = Field(description="The stage folder (read back: the folder it was read from).")
    files: dict[str, str] = Field(default_factory=dict, description="Logical name -> URI of each output; "
                                  "manifest.json names it relative to the stage folder, so a moved run reads its own.")
    digests: dict[str, str] = Field(default_factory=dict, description="Logical name -> content digest.")
    checks: dict[str, str] = Field(default_factory=dict, description="Content digest of an output that is checked "
                                   "but not keyed on (its bytes differ between identical runs: train's log_history).")
    sizes: dict[str, dict[str, int]] = Field(default_factory=dict, description="A folder output (a model): relative "
                                             "file name -> bytes, what a remote store's check compares.")
    counts: dict[str, int] = Field(default_factory=dict)
    stats: dict = Field(default_factory=dict)
    inputs: dict[str, str] = Field(default_factory=dict, description="Input name -> digest it was computed from.")
    config_digest: str = ""
    versions: dict[str, str] = Field(default_factory=dict)
    seed: int = 0
    duration_s: float = 0.0
    created: str = ""

    @property
    def digest(self) -> str:
        """What downstream stages key on: the stage key and its outputs' contents."""
        import hashlib

        h = hashlib.sha256(self.key.encode())
        for name in sorted(self.digests):
            h.update(f"{name}={self.digests[name]}".encode())
        return h.hexdigest()[:16]


class ModelRef(BaseModel):
    """A model as stages see it: where its weights are and what they are (for cache keys)."""

    uri: str
    digest: str
    iteration: int = Field(0, description="t of M_t.")
