"""Building preference pairs from judge scores (actor pairs) and meta-judge verdicts (judge pairs).

Method.md 3.3 (actor pairs with length control), 4.1 (which response the meta-judge looks at), 4.2 (both
presentation orders) and 4.3 (battle matrix, Bradley-Terry, length filter). Every function is pure: records
in, records plus a `Counter` of what was kept and why the rest was skipped, out.

Skip reasons (Counter keys):
    actor: too_few_valid, tie, overlap, identical_text, chosen_too_long; unscored_responses counts responses.
    meta targets: no_variance.   judge: no_verdicts, all_equal, identical_text, no_score_gap, chosen_too_long.
"""

from __future__ import annotations

import itertools
import math
import random
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from typing import Literal

from metareward.method.prompts import render_judge
from metareward.records import Judgment, MetaVerdict, PreferencePair, Response
from metareward.method.scoring import ScoreStats, battle_matrix, bradley_terry, score_stats
from metareward.method.scoring import position_weights as fit_position_weights  # judge_pairs has a keyword of that name

# Tier cuts are float products: with rho = 0.1, S_max = 3.25, S_min = 0.75 the top cut is 3.0000000000000004,
# which would shut out a response scored exactly 3.0. Compare with a tolerance so a score on a cut is inside.
_TOL = 1e-9
_VAR_TOL = 1e-12  # a variance below this is float noise from identical scores
_EPS_SPREAD = 1e-6  # Bradley-Terry strengths closer than this are "all equal"


# ------------------------------------------------------------------------------------------------ actor pairs


def select_by_rho(
    items: Sequence[tuple[str, float | None, int]], rho: float
) -> tuple[tuple[str, str] | None, str | None]:
    """Pick (chosen_id, rejected_id) from (id, score, length) with length control; or (None, skip reason).

    Top tier: S >= (1-rho) S_max + rho S_min, the SHORTEST wins. Bottom tier: S <= (1-rho) S_min + rho S_max,
    the LONGEST wins. Equal lengths go to the first item. Reasons: too_few_valid, tie, overlap (rho > 0.5 can
    make the tiers cross so the chosen score is not above the rejected one).

    rho = 0.32, scores 4.5/4.0/3.0/2.0: top cut 0.68*4.5 + 0.32*2.0 = 3.70 -> {a, b}, b is shorter;
    bottom cut 0.68*2.0 + 0.32*4.5 = 2.80 -> {d}.

    >>> select_by_rho([("a", 4.5, 900), ("b", 4.0, 300), ("c", 3.0, 100), ("d", 2.0, 50)], 0.32)
    (('b', 'd'), None)
    >>> select_by_rho([("a", 4.0, 9), ("b", 4.0, 5)], 0.0)
    (None, 'tie')
    """
    valid = [(i, float(s), n) for i, s, n in items if s is not None]
    if len(valid) < 2:
        return None, "too_few_valid"
    s_max, s_min = max(s for _, s, _ in valid), min(s for _, s, _ in valid)
    if s_max - s_min <= _TOL:
        return None, "tie"
    top = [x for x in valid if x[1] >= (1 - rho) * s_max + rho * s_min - _TOL]
    bottom = [x for x in valid if x[1] <= (1 - rho) * s_min + rho * s_max + _TOL]
    chosen = min(top, key=lambda x: x[2])  # min/max keep the first of equal keys: ties go to input order
    rejected = max(bottom, key=lambda x: x[2])
    if chosen[1] - rejected[1] <= _TOL:
        return None, "overlap"
    return (chosen[0], rejected[0]), None


def _stats_by_response(judgments: Iterable[Judgment]) -> dict[str, ScoreStats]:
    """ScoreStats of each response's judge scores, keyed by response id.

    >>> j = [Judgment(id=f"r-j{k}", response_id="r", prompt_id="p", text="", score=s)
    ...      for k, s in enumerate([4, 2, None])]
    >>> _stats_by_response(j)["r"]
    ScoreStats(mean=3.0, variance=1.0, n_valid=2, n_total=3)
    """
    scores: dict[str, list[float | None]] = defaultdict(list)
    for j in judgments:
        scores[j.response_id].append(j.score)
    return {rid: score_stats(s) for rid, s in scores.items()}


def _by_prompt(responses: Iterable[Response]) -> dict[str, list[Response]]:
    """Responses grouped by prompt id, groups and members in input order (so tie-breaks are reproducible)."""
    groups: dict[str, list[Response]] = defaultdict(list)
    for r in responses:
        groups[r.prompt_id].append(r)
    return dict(groups)


def _actor_pair(
    group: list[Response], stats: dict[str, ScoreStats], rho: float, max_chosen_chars: int | None
) -> tuple[PreferencePair | None, str | None]:
    """One prompt's actor pair (or the skip reason) from its responses' mean scores."""
    means = {r.id: (stats[r.id].mean if r.id in stats else None) for r in group}
    pick, reason = select_by_rho([(r.id, means[r.id], len(r.text)) for r in group], rho)
    if pick is None:
        return None, reason
    by_id = {r.id: r for r in group}
    chosen, rejected = by_id[pick[0]], by_id[pick[1]]
    if chosen.text == rejected.text:
        return None, "identical_text"  # duplicate samples scored differently: DPO gets no signal from them
    if max_chosen_chars is not None and len(chosen.text) > max_chosen_chars:
        return None, "chosen_too_long"
    return PreferencePair(
        kind="actor", prompt_id=chosen.prompt_id, prompt=chosen.prompt, chosen=chosen.text,
        rejected=rejected.text, chosen_id=chosen.id, rejected_id=rejected.id,
        chosen_score=means[chosen.id], rejected_score=means[rejected.id],
    ), None


def actor_pairs(
    responses: list[Response], judgments: list[Judgment], rho: float, max_chosen_chars: int | None
) -> tuple[list[PreferencePair], Counter]:
    """One actor pair per prompt: the mean judge score ranks the responses, `select_by_rho` picks.

    Counter keys: "pairs", each skip reason (per prompt), "unscored_responses" (per response with no valid
    score; such responses take no part in the selection).

    >>> rs = [Response(id=f"p-r{k}", prompt_id="p", prompt="Hi?", text=t) for k, t in enumerate(["Hello!", "Hm"])]
    >>> js = [Judgment(id=f"p-r{k}-j0", response_id=f"p-r{k}", prompt_id="p", text="", score=s)
    ...       for k, s in enumerate([5, 1])]
    >>> pairs, counts = actor_pairs(rs, js, rho=0.0, max_chosen_chars=None)
    >>> (pairs[0].chosen, pairs[0].rejected, dict(counts))
    ('Hello!', 'Hm', {'pairs': 1})
    """
    stats = _stats_by_response(judgments)
    pairs, counts = [], Counter()
    for group in _by_prompt(responses).values():
        counts["unscored_responses"] += sum(1 for r in group if r.id not in stats or stats[r.id].mean is None)
        pair, reason = _actor_pair(group, stats, rho, max_chosen_chars)
        if pair is None:
            counts[reason] += 1
        else:
            pairs.append(pair)
            counts["pairs"] += 1
    return pairs, +counts  # unary + drops zero counts, so an absent key means "never happened"


# --------------------------------------------------------------------------------------- meta-judge targets


def meta_targets(
    responses: list[Response], judgments: list[Judgment], seed: int
) -> tuple[dict[str, str], Counter]:
    """Per prompt, the response whose valid judge scores vary most (the judge is least sure about it).

    Eligible: >= 2 valid scores and variance > 0; a prompt with none counts as "no_variance". Equal top
    variances are broken by random.Random(f"{seed}:{prompt_id}") over the sorted ids, so the pick depends only
    on (seed, prompt), not on row order or on other prompts.

    >>> rs = [Response(id=f"p-r{k}", prompt_id="p", prompt="", text="") for k in range(2)]
    >>> sc = {"p-r0": [4, 4], "p-r1": [1, 5]}       # variances 0 and 4
    >>> js = [Judgment(id=f"{r}-j{n}", response_id=r, prompt_id="p", text="", score=s)
    ...       for r, ss in sc.items() for n, s in enumerate(ss)]
    >>> meta_targets(rs, js, seed=0)
    ({'p': 'p-r1'}, Counter({'targets': 1}))
    """
    stats = _stats_by_response(judgments)
    targets, counts = {}, Counter()
    for prompt_id, group in _by_prompt(responses).items():
        eligible = {r.id: stats[r.id].variance for r in group
                    if r.id in stats and stats[r.id].n_valid >= 2 and stats[r.id].variance > _VAR_TOL}
        if not eligible:
            counts["no_variance"] += 1
            continue
        top = max(eligible.values())
        tied = sorted(rid for rid, v in eligible.items() if v >= top - _VAR_TOL)
        targets[prompt_id] = random.Random(f"{seed}:{prompt_id}").choice(tied)
        counts["targets"] += 1
    return targets, counts


def meta_judge_requests(target_response: Response, judgments: list[Judgment]) -> list[tuple[str, str]]:
    """(a_id, b_id) for every pair of the target's valid judgments, in both orders (method.md 4.2).

    Order: pairs in combinations() order over the judgments as given, each (m, n) followed by (n, m).
    With N valid judgments that is N(N-1) calls (110 for N = 11). Other responses' judgments are ignored.

    >>> r = Response(id="p-r0", prompt_id="p", prompt="", text="")
    >>> js = [Judgment(id=f"p-r0-j{k}", response_id="p-r0", prompt_id="p", text="", score=s)
    ...       for k, s in enumerate([3, None, 4, 5])]
    >>> meta_judge_requests(r, js)[:2], len(meta_judge_requests(r, js))
    ([('p-r0-j0', 'p-r0-j2'), ('p-r0-j2', 'p-r0-j0')], 6)
    """
    valid = [j.id for j in judgments if j.response_id == target_response.id and j.score is not None]
    requests = []
    for a, b in itertools.combinations(valid, 2):
        requests += [(a, b), (b, a)]
    return requests


# ------------------------------------------------------------------------------------------------ judge pairs


def _with_outcome(v: MetaVerdict) -> MetaVerdict:
    """``v`` with p_a filled from ``winner`` when only the hard verdict was recorded (p_a is the outcome used).

    >>> _with_outcome(MetaVerdict(prompt_id="p", response_id="r", a_id="x", b_id="y", text="", winner="B")).p_a
    0.0
    """
    if v.p_a is not None or v.winner is None:
        return v
    return v.model_copy(update={"p_a": 1.0 if v.winner == "A" else 0.0})


def _weights_by_prompt(verdicts: list[MetaVerdict], mode: str) -> tuple[dict[str, tuple[float, float]], tuple]:
    """(prompt_id -> (w1, w2), pooled (w1, w2)) for mode "global", "prompt" or "none" (w1 = w2 = 1).

    >>> vs = [MetaVerdict(prompt_id=p, response_id="r", a_id="x", b_id="y", text="", winner=None, p_a=pa)
    ...       for p, pa in [("p1", 1.0), ("p1", 1.0), ("p2", 1.0), ("p2", 0.0)]]
    >>> _weights_by_prompt(vs, "prompt")
    ({'p1': (0.0, 1.0), 'p2': (0.5, 0.5)}, (0.25, 0.75))
    """
    decided = [v for v in verdicts if v.p_a is not None]
    pooled = fit_position_weights(v.p_a for v in decided)
    prompts = dict.fromkeys(v.prompt_id for v in verdicts)
    if mode == "none":
        return {p: (1.0, 1.0) for p in prompts}, (1.0, 1.0)
    if mode == "global":
        return {p: pooled for p in prompts}, pooled
    if mode == "prompt":
        return {p: fit_position_weights(v.p_a for v in decided if v.prompt_id == p) for p in prompts}, pooled
    raise ValueError(f"position_weights must be 'global', 'prompt' or 'none', got {mode!r}")


def _fit_winner_loser(group: list[MetaVerdict], w: tuple[float, float], l2: float) -> tuple[str, str] | str:
    """(chosen_id, rejected_id) by Bradley-Terry over one response's decided verdicts; else a skip reason.

    Strengths within _EPS_SPREAD of the best (worst) count as tied, and a tie goes to the first sorted id:
    a plain argmax would let 1e-16 of float noise decide between two judgments with identical records.
    """
    decided = [v for v in group if v.p_a is not None]
    if not decided:
        return "no_verdicts"
    ids = sorted({v.a_id for v in decided} | {v.b_id for v in decided})
    eps = bradley_terry(battle_matrix(ids, decided, *w), l2=l2)
    if eps.max() - eps.min() < _EPS_SPREAD:
        return "all_equal"
    best = next(i for i, e in zip(ids, eps) if e >= eps.max() - _EPS_SPREAD)
    worst = next(i for i, e in zip(ids, eps) if e <= eps.min() + _EPS_SPREAD)
    return best, worst


def _judge_pair(
    response: Response, chosen: Judgment, rejected: Judgment, max_chosen_chars: int | None, require_score_gap: bool
) -> tuple[PreferencePair | None, str | None]:
    """The judge pair (judge prompt -> chosen/rejected judgment), or why it is dropped."""
    if chosen.text == rejected.text:
        return None, "identical_text"
    if chosen.score is None or rejected.score is None:
        raise ValueError(f"{chosen.id} / {rejected.id}: a meta-judged judgment has no score (send valid ones only)")
    if require_score_gap and chosen.score == rejected.score:
        return None, "no_score_gap"
    if max_chosen_chars is not None and len(chosen.text) > max_chosen_chars:
        return None, "chosen_too_long"  # the meta-judge favours long judgments (method.md 4.3 step 5)
    return PreferencePair(
        kind="judge", prompt_id=response.prompt_id, prompt=render_judge(response.prompt, response.text),
        chosen=chosen.text, rejected=rejected.text, chosen_id=chosen.id, rejected_id=rejected.id,
        chosen_score=chosen.score, rejected_score=rejected.score,
    ), None


def _bias_stats(verdicts: list[MetaVerdict], judg: dict[str, Judgment]) -> dict:
    """The meta-judge's score and position bias (method.md 9, item 2; the paper's Table 5), as expected shares.

    score_bias: over decided verdicts on judgments with different scores, the share won by the higher score.
    position_bias: share of decided verdicts won by A; position_bias_equal_scores: the same on equal scores.
    """
    decided = [v for v in verdicts if v.p_a is not None]
    scored = [(v, judg[v.a_id].score, judg[v.b_id].score) for v in decided]
    scored = [(v, sa, sb) for v, sa, sb in scored if sa is not None and sb is not None]
    gap = [(v, sa > sb) for v, sa, sb in scored if sa != sb]
    same = [v for v, sa, sb in scored if sa == sb]
    higher = [v.p_a if a_higher else 1.0 - v.p_a for v, a_higher in gap]
    return {
        "n_verdicts": len(verdicts), "n_unparsed": len(verdicts) - len(decided), "n_decided": len(decided),
        "win_1st": sum(v.p_a for v in decided), "win_2nd": sum(1 - v.p_a for v in decided),
        "score_bias": _share(higher), "n_score_gap": len(gap),
        "position_bias": _share([v.p_a for v in decided]),
        "position_bias_equal_scores": _share([v.p_a for v in same]), "n_equal_scores": len(same),
    }


def _share(xs: list[float]) -> float | None:
    """Mean of ``xs``; None for an empty list (a rate over nothing is unknown, not 0).

    >>> _share([1.0, 0.0, 1.0, 1.0]), _share([])
    (0.75, None)
    """
    return sum(xs) / len(xs) if xs else None


def judge_pairs(
    responses: list[Response],
    judgments: list[Judgment],
    verdicts: list[MetaVerdict],
    *,
    position_weights: Literal["global", "prompt", "none"],
    l2: float,
    max_chosen_chars: int | None,
    require_score_gap: bool,
) -> tuple[list[PreferencePair], Counter, dict]:
    """One judge pair per meta-judged response: Bradley-Terry best vs worst judgment (method.md 4.3).

    Returns (pairs in ``responses`` order, Counter of "pairs" and skip reasons, stats). stats holds
    position_weights (the mode), w1/w2 (pooled over all verdicts; in "prompt" mode each prompt used its own),
    win_1st, win_2nd, n_verdicts, n_unparsed, n_decided, score_bias, n_score_gap, position_bias,
    position_bias_equal_scores, n_equal_scores. A verdict with p_a None but a winner counts as 1.0/0.0.

    >>> r = Response(id="p-r0", prompt_id="p", prompt="2+2?", text="4")
    >>> js = [Judgment(id=f"p-r0-j{k}", response_id="p-r0", prompt_id="p", text=f"Ok.\\nScore: {s}", score=s)
    ...       for k, s in enumerate([5, 2])]
    >>> vs = [MetaVerdict(prompt_id="p", response_id="p-r0", a_id=a, b_id=b, text="", winner=w)
    ...       for a, b, w in [("p-r0-j0", "p-r0-j1", "A"), ("p-r0-j1", "p-r0-j0", "B")]]   # j0 wins both
    >>> pairs, counts, stats = judge_pairs([r], js, vs, position_weights="global", l2=1e-3,
    ...                                    max_chosen_chars=None, require_score_gap=False)
    >>> pairs[0].chosen_id, pairs[0].rejected_id, dict(counts), stats["w1"], stats["score_bias"]
    ('p-r0-j0', 'p-r0-j1', {'pairs': 1}, 0.5, 1.0)
    """
    resp = {r.id: r for r in responses}
    judg = {j.id: j for j in judgments}
    verdicts = [_with_outcome(v) for v in verdicts]
    _check_ids(verdicts, resp, judg)
    weights, pooled = _weights_by_prompt(verdicts, position_weights)
    groups: dict[str, list[MetaVerdict]] = defaultdict(list)
    for v in verdicts:
        groups[v.response_id].append(v)
    pairs, counts = [], Counter()
    for rid in (r.id for r in responses if r.id in groups):
        picked = _fit_winner_loser(groups[rid], weights[resp[rid].prompt_id], l2)
        pair, reason = (None, picked) if isinstance(picked, str) else _judge_pair(
            resp[rid], judg[picked[0]], judg[picked[1]], max_chosen_chars, require_score_gap)
        counts[reason or "pairs"] += 1
        if pair is not None:
            pairs.append(pair)
    stats = {"position_weights": position_weights, "w1": pooled[0], "w2": pooled[1], **_bias_stats(verdicts, judg)}
    return pairs, counts, stats


def _check_ids(verdicts: list[MetaVerdict], resp: dict[str, Response], judg: dict[str, Judgment]) -> None:
    """Raise ValueError for a verdict naming a response or judgment that was not passed in, a judgment of
    another response, or a prompt_id other than its response's (per-prompt weights are keyed on it)."""
    for v in verdicts:
        if v.response_id in resp and resp[v.response_id].prompt_id != v.prompt_id:
            raise ValueError(f"meta-verdict on {v.response_id} says prompt {v.prompt_id!r}")
        named = (("response", v.response_id, resp), ("judgment", v.a_id, judg), ("judgment", v.b_id, judg))
        for kind, key, table in named:
            if key not in table:
                raise ValueError(f"meta-verdict {v.a_id} vs {v.b_id} names unknown {kind} {key!r}")
            if kind == "judgment" and table[key].response_id != v.response_id:
                raise ValueError(f"meta-verdict on {v.response_id} compares {key!r}, a judgment of another response")


def cap_judge_share(
    actor: list[PreferencePair], judge: list[PreferencePair], max_share: float | None, seed: int
) -> tuple[list[PreferencePair], int]:
    """Keep at most floor(max_share / (1 - max_share) * len(actor)) judge pairs, so judge <= max_share of all.

    A seeded random subset is dropped; the kept pairs stay in their input order. None or 1.0 keeps everything.
    85 actor pairs, max_share 0.15: 0.15/0.85*85 = 15 kept, so 15 of 100 = 0.15.

    >>> kept, dropped = cap_judge_share(actor=[None] * 85, judge=[None] * 40, max_share=0.15, seed=0)  # stand-ins
    >>> len(kept), dropped
    (15, 25)
    """
    if max_share is None or max_share >= 1.0:
        return list(judge), 0
    # floor() of a product that should be whole can land just below it ((1/3)/(2/3)*2 = 0.9999999999999999),
    # so nudge it up by a relative 1e-9 first
    ratio = max_share / (1.0 - max_share) * len(actor)
    limit = math.floor(ratio * (1.0 + 1e-9))
    if len(judge) <= limit:
        return list(judge), 0
    keep = sorted(random.Random(seed).sample(range(len(judge)), limit))
    return [judge[i] for i in keep], len(judge) - limit
