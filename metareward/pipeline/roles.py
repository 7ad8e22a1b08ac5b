"""The three roles of one model, as requests to an engine and records back: the actor's context check, the
judge (N judgments per response with the paper's rubric, scored by parsing or by expected value) and the
meta-judge (pairs of judgments in both orders, a verdict each); and the statistics the stages keep of them.
"""

from __future__ import annotations

import logging
import math
from collections import Counter

from metareward.config import RunConfig
from metareward.engines.base import COUNTS_PROMPT_TOKENS, SCORES_WHILE_GENERATING, Sampling, Seeds, can
from metareward.method.scoring import (cache_scores_stand, choice_prefix, expected_score, expected_verdict,
                                       likeliest_choice)
from metareward.records import Judgment, MetaVerdict, Response

log = logging.getLogger("metareward")


def to_sampling(section) -> Sampling:
    """A config's ``*.sampling`` section as the engines take it."""
    return Sampling(temperature=section.temperature, top_p=section.top_p, max_new_tokens=section.max_new_tokens)


def fits_context(engine, items: list, texts: list[str], max_new_tokens: int) -> list:
    """The items whose prompt plus ``max_new_tokens`` fits the engine's context (skipped ones are counted by the
    stage from what is missing); every item when the engine does not count prompt tokens or states no context."""
    limit = engine.context_length if can(engine, COUNTS_PROMPT_TOKENS) else None
    if not limit or not items:
        return items
    kept = [i for i, n in zip(items, engine.prompt_tokens(texts)) if n + max_new_tokens <= limit]
    if len(kept) < len(items):
        log.warning("%d of %d prompts are longer than the context (%d tokens with %d new ones): skipped",
                    len(items) - len(kept), len(items), limit, max_new_tokens)
    return kept


def judge_responses(engine, cfg: RunConfig, responses: list[Response], n: int,
                    seed: Seeds | None = None) -> list[Judgment]:
    """N judgments per response with the paper's prompt, scored by parsing or by expected value."""
    from metareward.method import parsing
    from metareward.method.prompts import SCORE_CHOICES, SCORE_PREFIX, render_judge

    seed = cfg.run.seed if seed is None else seed
    texts = [render_judge(r.prompt, r.text) for r in responses]
    sampling = cfg.judge.sampling
    suffix = "\n" + SCORE_PREFIX  # what the cache shortcut scores after each sample
    on_cache = (cfg.judge.scoring == "expected" and sampling.max_new_tokens > 0
                and can(engine, SCORES_WHILE_GENERATING))
    if on_cache:  # score each justification on the KV cache that wrote it (no second prefill)
        scored = engine.generate_scored(texts, n, to_sampling(sampling), seed, suffix, list(SCORE_CHOICES))
        outs = [[c for c, _ in row] for row in scored]
        cache_probs = [p for row in scored for _, p in row]
    else:
        outs = reason(engine, texts, n, sampling, seed)
        cache_probs = [None] * sum(len(cs) for cs in outs)
    flat = [(r, text, j, c.text) for r, text, cs in zip(responses, texts, outs) for j, c in enumerate(cs)]
    if cfg.judge.scoring == "parse":
        return [Judgment(id=f"{r.id}-j{j}", response_id=r.id, prompt_id=r.prompt_id, text=out,
                         score=parsing.parse_score(out)) for r, _, j, out in flat]
    # expected: keep the model's justification, force "Score: " and read P(0..5) (AlpacaEval-style weighting)
    prefixes = [choice_prefix(parsing.justification(out), SCORE_PREFIX) for *_, out in flat]
    probs = [p if p is not None and cache_scores_stand(out, suffix, pre) else None
             for p, pre, (*_, out) in zip(cache_probs, prefixes, flat)]
    todo = [i for i, p in enumerate(probs) if p is None]
    if on_cache:
        log.info("judge: %d of %d scores read on the sample's own KV cache, %d re-scored", len(probs) - len(todo),
                 len(probs), len(todo))
    for i, p in zip(todo, engine.choice_probs([flat[i][1] for i in todo], [prefixes[i] for i in todo],
                                              SCORE_CHOICES) if todo else []):
        probs[i] = p
    rows = []
    for (r, _, j, _), prefix, p in zip(flat, prefixes, probs):
        rows.append(Judgment(id=f"{r.id}-j{j}", response_id=r.id, prompt_id=r.prompt_id,
                             text=prefix + SCORE_CHOICES[likeliest_choice(p)], score=round(expected_score(p), 6),
                             score_probs=[round(x, 6) for x in p]))
    return rows


def reason(engine, texts: list[str], n: int, sampling, seed: Seeds):
    """The judge's or meta-judge's free text; with max_new_tokens=0 ('expected' mode) there is none."""
    if sampling.max_new_tokens == 0:
        from metareward.engines.base import Completion

        return [[Completion(text="", n_tokens=0, finish_reason="length")] * n for _ in texts]
    return engine.generate(texts, n, to_sampling(sampling), seed)


def judgeable(engine, cfg: RunConfig, responses: list[Response],
              seeds: list[int]) -> tuple[list[Response], list[int]]:
    """Responses whose judge prompt fits the context, with their seeds (the rest get no judgment: counted, then
    'unscored')."""
    from metareward.method.prompts import render_judge

    extra = 2 if cfg.judge.scoring == "expected" else 0  # the forced "Score: " and the digit
    kept = fits_context(engine, list(zip(responses, seeds)), [render_judge(r.prompt, r.text) for r in responses],
                        cfg.judge.sampling.max_new_tokens + extra)
    return [r for r, _ in kept], [s for _, s in kept]


def meta_requests(cfg, targets, responses, judgments) -> list[tuple[Response, Judgment, Judgment, str]]:
    from metareward.method.pairs import meta_judge_requests
    from metareward.method.parsing import strip_score
    from metareward.method.prompts import render_meta_judge

    by_resp = {r.id: r for r in responses}
    by_id = {j.id: j for j in judgments}
    requests = []
    for prompt_id in sorted(targets):
        r = by_resp[targets[prompt_id]]
        mine = [j for j in judgments if j.response_id == r.id]
        for a_id, b_id in meta_judge_requests(r, mine):
            a, b = by_id[a_id], by_id[b_id]
            ta, tb = (strip_score(a.text), strip_score(b.text)) if cfg.meta_judge.strip_score else (a.text, b.text)
            requests.append((r, a, b, render_meta_judge(r.prompt, r.text, ta, tb)))
    return requests


def run_meta(engine, cfg: RunConfig, requests, seed: Seeds | None = None) -> list[MetaVerdict]:
    from metareward.method import parsing
    from metareward.method.prompts import VERDICT_CHOICES, VERDICT_PREFIX

    texts = [req[3] for req in requests]
    outs = [cs[0].text for cs in reason(engine, texts, 1, cfg.meta_judge.sampling,
                                         cfg.run.seed if seed is None else seed)]
    if cfg.meta_judge.scoring == "parse":
        winners = [parsing.parse_verdict(o) for o in outs]
        p_as = [None if w is None else float(w == "A") for w in winners]
    else:  # expected: force "Winner: Judgment " and compare P(A) with P(B)
        outs = [choice_prefix(parsing.verdict_reasoning(o), VERDICT_PREFIX) for o in outs]
        p_as = [round(p[0], 6) for p in engine.choice_probs(texts, outs, VERDICT_CHOICES)]
        winners = [expected_verdict(p) for p in p_as]
        outs = [o + (w or "") for o, w in zip(outs, winners)]
    return [MetaVerdict(prompt_id=r.prompt_id, response_id=r.id, a_id=a.id, b_id=b.id, text=o, winner=w, p_a=p)
            for (r, a, b, _), o, w, p in zip(requests, outs, winners, p_as)]


def score_counts(rows: list[Judgment]) -> dict[str, int]:
    valid = sum(j.score is not None for j in rows)
    return {"judgments": len(rows), "parsed": valid, "unparsed": len(rows) - valid}


def score_stats(rows: list[Judgment]) -> dict:
    scores = [j.score for j in rows if j.score is not None]
    hist = Counter(str(math.floor(s + 0.5)) for s in scores)  # rounded to the rubric's integer points
    return {"parse_rate": round(len(scores) / len(rows), 4) if rows else None, "mean_score": mean(scores),
            "score_histogram": {str(k): hist.get(str(k), 0) for k in range(6)},
            "share_max_score": round(sum(s >= 4.5 for s in scores) / len(scores), 4) if scores else None}


def mean(xs) -> float | None:
    xs = list(xs)
    return round(sum(xs) / len(xs), 4) if xs else None
