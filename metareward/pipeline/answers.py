"""The benchmark's answers: every greedy reply of M_t that the benchmark stage scores, written by one sharded stage.

The held-out prompts, IFEval, MT-Bench's first turn, AlpacaEval, Arena-Hard and LLMBar's judge requests (each pair
in both orders) become one work list of `Call`s, cut into shards like generate's (`metareward.runstore.shards`):
the replicas of the `answers` stage answer them at once, a killed stage keeps its finished shards, and a row
depends only on its own item (greedy decoding, the item's own seed), so a resumed stage writes the same bytes on the
CPU engine. What needs an answer first (MT-Bench's second turn) or another model (the evaluator judges, the drift
guard's reference judge) is the benchmark stage's (`metareward.pipeline.benchmark`).

    >>> [c.id for c in calls_for(cfg, eval_prompts, load_sources(cfg))][:3]   # doctest: +SKIP
    ['heldout/p017', 'heldout/p020', 'ifeval/1000']
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from dataclasses import dataclass, field

from metareward.engines.base import Sampling
from metareward.records import EvalAnswer, Prompt


@dataclass(frozen=True)
class Call:
    """One request: a single user turn (the engine applies the chat template), answered greedily with up to
    ``max_new_tokens``; with ``choices``, the probability of each choice after the forced ``prefix`` instead."""

    id: str
    prompt: str
    max_new_tokens: int = 0
    prefix: str = ""
    choices: tuple[str, ...] = ()


@dataclass
class Sources:
    """The benchmark items the config asks for, read once: (items, from the official set?) per benchmark."""

    mt_bench: tuple[list, bool] | None = None
    alpaca_eval: tuple[list[dict], bool] | None = None
    arena_hard: list[dict] | None = None
    ifeval: list[dict] | None = None
    llmbar: dict[str, list[dict]] = field(default_factory=dict)


def load_sources(cfg) -> Sources:
    """Every enabled benchmark's items, from the configured files (or the shipped mini sets)."""
    from metareward.evals import arena_hard, harness, ifeval, llmbar
    from metareward.inputs.prompt_sources import shipped_path

    e, src = cfg.eval, Sources()
    if e.mt_bench.enabled:
        qs, official = harness.load_mt_questions(e.mt_bench.questions)
        src.mt_bench = (harness.add_references(qs, e.mt_bench.reference_answers), official)
    if e.alpaca_eval.enabled:
        src.alpaca_eval = harness.load_alpaca_references(e.alpaca_eval.references)
    if e.arena_hard.enabled:
        src.arena_hard = arena_hard.read_questions(e.arena_hard.questions)
    if e.ifeval.enabled:
        src.ifeval = ifeval.read_prompts(e.ifeval.prompts or shipped_path("data:mini_ifeval.jsonl"), e.ifeval.limit)
    if e.llmbar.enabled:
        sets = e.llmbar.sets or {"Natural": llmbar.natural_path()}
        src.llmbar = {name: llmbar.read_dataset(path, e.llmbar.limit) for name, path in sorted(sets.items())}
    return src


def llmbar_id(name: str, index: int, swap: bool) -> str:
    return f"llmbar/{name}/{index}/{'swap' if swap else 'noswap'}"


def calls_for(cfg, eval_prompts: list[Prompt], src: Sources) -> list[Call]:
    """The work list, in a fixed order: held-out prompts, IFEval, MT-Bench turn 1, AlpacaEval, Arena-Hard, LLMBar."""
    from metareward.evals import llmbar
    from metareward.evals.judges import Chat

    e = cfg.eval
    out = [Call(f"heldout/{p.id}", p.prompt, e.max_new_tokens) for p in eval_prompts]
    out += [Call(f"ifeval/{r['key']}", r["prompt"], e.ifeval.max_new_tokens) for r in src.ifeval or []]
    if src.mt_bench:
        out += [Call(f"mt_bench/{q.question_id}", q.turns[0], e.mt_bench.max_new_tokens) for q in src.mt_bench[0]]
    if src.alpaca_eval:
        out += [Call(f"alpaca_eval/{i}", r["instruction"], e.alpaca_eval.max_new_tokens)
                for i, r in enumerate(src.alpaca_eval[0])]
    out += [Call(f"arena_hard/{q['question_id']}", q["prompt"], e.arena_hard.max_new_tokens)
            for q in src.arena_hard or []]
    for name, items in src.llmbar.items():
        for i, item in enumerate(items):
            for swap in (False, True):
                system, user = (m["content"] for m in llmbar.vanilla_prompt(item, swap))
                text = Chat(system, user).flat()  # the one user turn our engines take
                if e.llmbar.scoring == "expected":
                    out.append(Call(llmbar_id(name, i, swap), text, prefix=llmbar.CHOICE_PREFIX,
                                    choices=tuple(llmbar.CHOICES)))
                else:
                    out.append(Call(llmbar_id(name, i, swap), text, e.llmbar.max_new_tokens))
    return out


def digest(work: list[Call]) -> str:
    """What the work list asks, for the stage key: an edited benchmark file with the same path is new work."""
    data = json.dumps([[c.id, c.prompt, c.max_new_tokens, c.prefix, list(c.choices)] for c in work])
    return hashlib.sha256(data.encode()).hexdigest()[:16]


def answer_shard(engine, chunk: list[Call], seeds: list[int]) -> list[EvalAnswer]:
    """One shard's answers, in its order: written answers grouped by length, then choice requests."""
    from metareward.pipeline.roles import fits_context

    got: dict[str, EvalAnswer] = {}
    written: dict[int, list[tuple[Call, int]]] = defaultdict(list)
    for c, s in zip(chunk, seeds):
        if not c.choices:
            written[c.max_new_tokens].append((c, s))
    for n, group in sorted(written.items()):
        kept = fits_context(engine, group, [c.prompt for c, _ in group], n)
        outs = engine.generate([c.prompt for c, _ in kept], 1, Sampling(0.0, 1.0, n), [s for _, s in kept]) if kept else []
        for (c, _), cs in zip(kept, outs):
            got[c.id] = EvalAnswer(id=c.id, text=cs[0].text, n_tokens=cs[0].n_tokens, finish_reason=cs[0].finish_reason)
    asks = [c for c in chunk if c.choices]
    kept = fits_context(engine, asks, [c.prompt for c in asks], 2)
    for c, p in zip(kept, engine.choice_probs([c.prompt for c in kept], [c.prefix for c in kept],
                                             list(kept[0].choices)) if kept else []):
        best = max(range(len(p)), key=lambda k: p[k])
        got[c.id] = EvalAnswer(id=c.id, text=c.prefix + c.choices[best], probs=[round(x, 6) for x in p])
    return [got.get(c.id) or EvalAnswer(id=c.id, text="", finish_reason="too_long") for c in chunk]
