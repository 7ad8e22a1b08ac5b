"""metareward.method.pairs: actor pairs, meta-judge targets and requests, judge pairs, the judge-share cap."""

from __future__ import annotations

import doctest
import random

import pytest

from metareward.method import pairs as pairs_module
from metareward.method.pairs import (
    actor_pairs,
    cap_judge_share,
    judge_pairs,
    meta_judge_requests,
    meta_targets,
    select_by_rho,
)
from metareward.method.prompts import render_judge
from metareward.records import Judgment, MetaVerdict, PreferencePair, Response


def _resp(prompt_id: str, k: int, text: str) -> Response:
    return Response(id=f"{prompt_id}-r{k}", prompt_id=prompt_id, prompt=f"Question {prompt_id}?", text=text)


def _judgments(response: Response, scores: list[float | None], texts: list[str] | None = None) -> list[Judgment]:
    texts = texts or [f"Judgment {n} of {response.id}.\nScore: {s}" for n, s in enumerate(scores)]
    return [Judgment(id=f"{response.id}-j{n}", response_id=response.id, prompt_id=response.prompt_id,
                     text=t, score=s) for n, (s, t) in enumerate(zip(scores, texts))]


def _verdict(a: str, b: str, winner: str | None, p_a: float | None = None) -> MetaVerdict:
    """A verdict on judgments '<prompt>-r<k>-j<n>'; p_a defaults to the hard outcome of ``winner``."""
    if p_a is None and winner is not None:
        p_a = 1.0 if winner == "A" else 0.0
    prompt_id, k = a.split("-")[0], a.split("-")[1]
    return MetaVerdict(prompt_id=prompt_id, response_id=f"{prompt_id}-{k}", a_id=a, b_id=b, text="",
                       winner=winner, p_a=p_a)


# ------------------------------------------------------------------------------------------------ select_by_rho


def test_select_by_rho_length_control():
    """rho = 0.32, scores 4.5/4.0/3.0/2.0/2.5.

    Top cut 0.68*4.5 + 0.32*2.0 = 3.70 -> {a 4.5 (900 chars), b 4.0 (300)}: the shorter, b, is chosen.
    Bottom cut 0.68*2.0 + 0.32*4.5 = 2.80 -> {d 2.0 (50), e 2.5 (2000)}: the longer, e, is rejected.
    """
    items = [("a", 4.5, 900), ("b", 4.0, 300), ("c", 3.0, 100), ("d", 2.0, 50), ("e", 2.5, 2000)]
    assert select_by_rho(items, 0.32) == (("b", "e"), None)


def test_select_by_rho_zero_is_max_vs_min():
    """rho = 0: top tier = {S_max}, bottom = {S_min}; equal lengths go to the first in order."""
    items = [("a", 3.0, 10), ("b", 5.0, 40), ("c", 5.0, 20), ("d", 1.0, 7), ("e", 1.0, 7)]
    assert select_by_rho(items, 0.0) == (("c", "d"), None)


def test_select_by_rho_boundary_tolerance():
    """rho = 0.1, S_max 3.25, S_min 0.75: top cut 0.9*3.25 + 0.1*0.75 = 3.0 exactly, computed as
    3.0000000000000004; the 3.0 response (shortest) must still be in the top tier and be chosen."""
    items = [("a", 3.25, 500), ("b", 3.0, 100), ("c", 0.75, 50)]
    assert select_by_rho(items, 0.1) == (("b", "c"), None)


def test_select_by_rho_skip_reasons():
    """too_few_valid: < 2 scored; tie: S_max == S_min; overlap: rho = 0.6 crosses the tiers.

    Overlap case, scores 5/3/1: top cut 0.4*5 + 0.6*1 = 2.6 -> {5, 3}, shortest is '3' (10 chars);
    bottom cut 0.4*1 + 0.6*5 = 3.4 -> {3, 1}, longest is '3' too: chosen score 3 <= rejected 3.
    """
    assert select_by_rho([("a", 4.0, 5), ("b", None, 5)], 0.0) == (None, "too_few_valid")
    assert select_by_rho([], 0.0) == (None, "too_few_valid")
    assert select_by_rho([("a", 4.0, 5), ("b", 4.0, 9), ("c", None, 1)], 0.3) == (None, "tie")
    assert select_by_rho([("x", 5.0, 100), ("y", 3.0, 10), ("z", 1.0, 5)], 0.6) == (None, "overlap")


# ------------------------------------------------------------------------------------------------ actor_pairs


def test_actor_pairs_mean_scores_and_every_skip_reason():
    """Per prompt (rho = 0, cap 20 chars):

    p1: r0 scores [5, None, 3] -> mean 4.0; r1 [2, 2] -> 2.0; r2 [None] -> unscored. Pair r0 > r1.
    p2: both mean 3.0 -> tie.          p3: a single response -> too_few_valid.
    p4: chosen text is 26 chars > 20 -> chosen_too_long.   p5: same text scored 5 and 1 -> identical_text.
    """
    p1 = [_resp("p1", 0, "Short good."), _resp("p1", 1, "Bad."), _resp("p1", 2, "Unjudged.")]
    p2 = [_resp("p2", 0, "One."), _resp("p2", 1, "Two.")]
    p3 = [_resp("p3", 0, "Alone.")]
    p4 = [_resp("p4", 0, "A very long chosen answer."), _resp("p4", 1, "No.")]
    p5 = [_resp("p5", 0, "Same."), _resp("p5", 1, "Same.")]
    judgments = (_judgments(p1[0], [5, None, 3]) + _judgments(p1[1], [2, 2]) + _judgments(p1[2], [None])
                 + _judgments(p2[0], [3]) + _judgments(p2[1], [3]) + _judgments(p3[0], [4])
                 + _judgments(p4[0], [5]) + _judgments(p4[1], [1]) + _judgments(p5[0], [5]) + _judgments(p5[1], [1]))
    pairs, counts = actor_pairs(p1 + p2 + p3 + p4 + p5, judgments, rho=0.0, max_chosen_chars=20)
    assert pairs == [PreferencePair(kind="actor", prompt_id="p1", prompt="Question p1?", chosen="Short good.",
                                    rejected="Bad.", chosen_id="p1-r0", rejected_id="p1-r1",
                                    chosen_score=4.0, rejected_score=2.0)]
    assert counts == {"pairs": 1, "unscored_responses": 1, "tie": 1, "too_few_valid": 1,
                      "chosen_too_long": 1, "identical_text": 1}


def test_actor_pairs_no_cap_and_overlap():
    """max_chosen_chars None keeps long chosen responses; rho = 0.6 with 5/3/1 (see select_by_rho) -> overlap."""
    rs = [_resp("p", 0, "x" * 100), _resp("p", 1, "y" * 10), _resp("p", 2, "z" * 5)]
    js = _judgments(rs[0], [5]) + _judgments(rs[1], [3]) + _judgments(rs[2], [1])
    assert actor_pairs(rs, js, rho=0.6, max_chosen_chars=None) == ([], {"overlap": 1})
    pairs, counts = actor_pairs(rs, js, rho=0.0, max_chosen_chars=None)
    assert (pairs[0].chosen_id, pairs[0].rejected_id, counts) == ("p-r0", "p-r2", {"pairs": 1})


# ------------------------------------------------------------------------------------------------ meta_targets


def test_meta_targets_highest_variance_and_no_variance():
    """p1: r0 [4, 4, 4] var 0; r1 [3, 5] var 1; r2 [2, 5, None] var ((1.5)^2 + (1.5)^2) / 2 = 2.25 -> r2.
    p2: every response has variance 0 -> no_variance. p3: only one valid score -> not eligible -> no_variance."""
    p1 = [_resp("p1", k, "t") for k in range(3)]
    p2 = [_resp("p2", k, "t") for k in range(2)]
    p3 = [_resp("p3", 0, "t")]
    js = (_judgments(p1[0], [4, 4, 4]) + _judgments(p1[1], [3, 5]) + _judgments(p1[2], [2, 5, None])
          + _judgments(p2[0], [5, 5]) + _judgments(p2[1], [1, 1]) + _judgments(p3[0], [5, None]))
    targets, counts = meta_targets(p1 + p2 + p3, js, seed=0)
    assert targets == {"p1": "p1-r2"}
    assert counts == {"targets": 1, "no_variance": 2}


def test_meta_targets_seeded_tie_break():
    """r0 [1, 3] and r1 [2, 4] both have variance 1: the pick is Random(f"{seed}:p").choice(sorted ids),
    independent of row order, and different seeds do pick both."""
    rs = [_resp("p", 0, "t"), _resp("p", 1, "t")]
    js = _judgments(rs[0], [1, 3]) + _judgments(rs[1], [2, 4])
    picks = set()
    for seed in range(20):
        expected = random.Random(f"{seed}:p").choice(["p-r0", "p-r1"])
        assert meta_targets(rs, js, seed)[0] == {"p": expected}
        assert meta_targets(rs[::-1], js[::-1], seed)[0] == {"p": expected}
        picks.add(expected)
    assert picks == {"p-r0", "p-r1"}


# ------------------------------------------------------------------------------------------------ requests


def test_meta_judge_requests_both_orders_valid_only():
    """Valid judgments j0, j2, j3 (j1 unscored): C(3,2) = 3 pairs x 2 orders = 6 requests, in order."""
    r = _resp("p", 0, "t")
    other = _resp("p", 1, "t")
    js = _judgments(r, [3, None, 4, 5]) + _judgments(other, [1, 2])
    assert meta_judge_requests(r, js) == [
        ("p-r0-j0", "p-r0-j2"), ("p-r0-j2", "p-r0-j0"),
        ("p-r0-j0", "p-r0-j3"), ("p-r0-j3", "p-r0-j0"),
        ("p-r0-j2", "p-r0-j3"), ("p-r0-j3", "p-r0-j2"),
    ]
    assert meta_judge_requests(r, _judgments(r, [3, None])) == []


def test_meta_judge_requests_count_for_eleven():
    """N = 11 valid judgments -> 55 pairs -> 110 meta-judge calls (method.md 4.2)."""
    r = _resp("p", 0, "t")
    assert len(meta_judge_requests(r, _judgments(r, [float(i % 6) for i in range(11)]))) == 110


# ------------------------------------------------------------------------------------------------ judge_pairs


def _three_judgment_case():
    """x = j0 (score 3), y = j1 (4), z = j2 (4); 6 decided calls and one unparsed:

    1 (x,y) B: y wins 2nd   2 (y,x) A: y wins 1st   3 (x,z) B: z wins 2nd
    4 (z,x) A: z wins 1st   5 (y,z) A: y wins 1st   6 (z,y) A: z wins 1st   7 (z,y) unparsed
    win_1st = 4, win_2nd = 2 -> w1 = 1/3, w2 = 2/3.
    B[y,x] = w2 + w1 = 1, B[z,x] = 1, B[y,z] = B[z,y] = w1 = 1/3, row x = 0: y and z tie on top, x is last.
    """
    r = Response(id="p-r0", prompt_id="p", prompt="What is 2+2?", text="4")
    js = _judgments(r, [3, 4, 4])
    x, y, z = (j.id for j in js)
    vs = [_verdict(x, y, "B"), _verdict(y, x, "A"), _verdict(x, z, "B"), _verdict(z, x, "A"),
          _verdict(y, z, "A"), _verdict(z, y, "A"), _verdict(z, y, None)]
    return r, js, vs


def test_judge_pairs_three_judgments_by_hand():
    """y and z tie on top -> the first sorted id, y (p-r0-j1), is chosen; x is rejected.

    Bias stats: gap pairs are calls 1-4 (3 vs 4), each won by the higher score -> score_bias 4/4 = 1.0;
    position_bias = A wins 4 / 6 decided; equal-score calls 5, 6 both won by A -> 1.0.
    """
    r, js, vs = _three_judgment_case()
    pairs, counts, stats = judge_pairs([r], js, vs, position_weights="global", l2=1e-3,
                                       max_chosen_chars=None, require_score_gap=False)
    assert pairs == [PreferencePair(kind="judge", prompt_id="p", prompt=render_judge("What is 2+2?", "4"),
                                    chosen=js[1].text, rejected=js[0].text, chosen_id="p-r0-j1",
                                    rejected_id="p-r0-j0", chosen_score=4.0, rejected_score=3.0)]
    assert counts == {"pairs": 1}
    assert stats["w1"] == pytest.approx(1 / 3) and stats["w2"] == pytest.approx(2 / 3)
    assert (stats["win_1st"], stats["win_2nd"], stats["n_verdicts"], stats["n_unparsed"]) == (4.0, 2.0, 7, 1)
    assert (stats["score_bias"], stats["n_score_gap"]) == (1.0, 4)
    assert stats["position_bias"] == pytest.approx(4 / 6)
    assert (stats["position_bias_equal_scores"], stats["n_equal_scores"]) == (1.0, 2)


def test_judge_pairs_position_weight_modes():
    """R1 (p1): x wins 4 times from 1st place, y twice from 2nd: calls 4 x (x,y) A, 2 x (x,y) B.
    R2 (p2): (u,v) A, (v,u) A: symmetric, so p2 is all_equal in every mode.

    none:   B[x,y] = 4, B[y,x] = 2 -> x chosen.
    prompt: p1 alone has win_1st 4, win_2nd 2 -> w1 = 1/3, w2 = 2/3: B[x,y] = 4/3 = B[y,x] -> all_equal.
    global: win_1st 6, win_2nd 2 (3:1) -> w1 = 0.25, w2 = 0.75: B[x,y] = 1.0 < B[y,x] = 1.5 -> y chosen.
    """
    r1, r2 = _resp("p1", 0, "answer one"), _resp("p2", 0, "answer two")
    js = _judgments(r1, [2, 4]) + _judgments(r2, [3, 5])
    x, y, u, v = (j.id for j in js)
    vs = [_verdict(x, y, "A")] * 4 + [_verdict(x, y, "B")] * 2 + [_verdict(u, v, "A"), _verdict(v, u, "A")]
    kw = dict(l2=1e-3, max_chosen_chars=None, require_score_gap=False)

    pairs, counts, stats = judge_pairs([r1, r2], js, vs, position_weights="none", **kw)
    assert [p.chosen_id for p in pairs] == [x] and counts == {"pairs": 1, "all_equal": 1}
    assert (stats["w1"], stats["w2"]) == (1.0, 1.0)

    pairs, counts, _ = judge_pairs([r1, r2], js, vs, position_weights="prompt", **kw)
    assert pairs == [] and counts == {"all_equal": 2}

    pairs, counts, stats = judge_pairs([r1, r2], js, vs, position_weights="global", **kw)
    assert [(p.chosen_id, p.rejected_id) for p in pairs] == [(y, x)] and counts == {"pairs": 1, "all_equal": 1}
    assert (stats["w1"], stats["w2"], stats["win_1st"], stats["win_2nd"]) == (0.25, 0.75, 6.0, 2.0)


def test_judge_pairs_skip_reasons():
    """Each response has two judgments; j0 beats j1 in both orders unless noted (weights 'none').

    p1: only unparsed verdicts -> no_verdicts.      p2: both judgments have the same text -> identical_text.
    p3: same score 4 and 4 with require_score_gap -> no_score_gap.
    p4: chosen judgment is 60 chars > cap 50 -> chosen_too_long.
    """
    rs = [_resp(f"p{k}", 0, "resp") for k in range(1, 5)]
    js = (_judgments(rs[0], [2, 4]) + _judgments(rs[1], [5, 1], texts=["Same.\nScore: 5"] * 2)
          + _judgments(rs[2], [4, 4]) + _judgments(rs[3], [5, 1], texts=["L" * 51 + "\nScore: 5", "ok\nScore: 1"]))
    vs = [_verdict(js[0].id, js[1].id, None), _verdict(js[1].id, js[0].id, None)]
    for k in range(1, 4):
        a, b = js[2 * k].id, js[2 * k + 1].id
        vs += [_verdict(a, b, "A"), _verdict(b, a, "B")]
    pairs, counts, stats = judge_pairs(rs, js, vs, position_weights="none", l2=1e-3,
                                       max_chosen_chars=50, require_score_gap=True)
    assert pairs == []
    assert counts == {"no_verdicts": 1, "identical_text": 1, "no_score_gap": 1, "chosen_too_long": 1}
    assert (stats["n_verdicts"], stats["n_unparsed"], stats["n_decided"]) == (8, 2, 6)


def test_judge_pairs_expected_mode_and_winner_fallback():
    """'expected' p_a = 0.8 for (j0, j1) and 0.3 for (j1, j0): j0 wins 0.8 + 0.7 = 1.5, j1 0.5 -> j0 chosen.
    A verdict recorded with winner but no p_a counts as 1.0/0.0 (here: both say j0 won)."""
    r = _resp("p", 0, "resp")
    js = _judgments(r, [5, 2])
    kw = dict(position_weights="none", l2=1e-3, max_chosen_chars=None, require_score_gap=False)
    soft = [_verdict(js[0].id, js[1].id, "A", p_a=0.8), _verdict(js[1].id, js[0].id, "B", p_a=0.3)]
    assert judge_pairs([r], js, soft, **kw)[0][0].chosen_id == js[0].id
    hard = [MetaVerdict(prompt_id="p", response_id=r.id, a_id=js[0].id, b_id=js[1].id, text="", winner="A"),
            MetaVerdict(prompt_id="p", response_id=r.id, a_id=js[1].id, b_id=js[0].id, text="", winner="B")]
    pairs, counts, stats = judge_pairs([r], js, hard, **kw)
    assert (pairs[0].chosen_id, counts, stats["n_unparsed"]) == (js[0].id, {"pairs": 1}, 0)


def test_judge_pairs_unknown_ids_and_mode():
    """Unknown judgment/response ids, a judgment of another response, a verdict whose prompt_id is not its
    response's, and an unknown mode each raise ValueError."""
    r = _resp("p", 0, "resp")
    js = _judgments(r, [5, 2])
    kw = dict(l2=1e-3, max_chosen_chars=None, require_score_gap=False)
    with pytest.raises(ValueError, match="p-r0-j9"):
        judge_pairs([r], js, [_verdict(js[0].id, "p-r0-j9", "A")], position_weights="global", **kw)
    with pytest.raises(ValueError, match="response"):
        judge_pairs([], js, [_verdict(js[0].id, js[1].id, "A")], position_weights="global", **kw)
    other = _judgments(_resp("p", 1, "other"), [3])
    with pytest.raises(ValueError, match="another response"):
        judge_pairs([r], js + other, [_verdict(js[0].id, other[0].id, "A")], position_weights="global", **kw)
    wrong_prompt = _verdict(js[0].id, js[1].id, "A").model_copy(update={"prompt_id": "q"})
    with pytest.raises(ValueError, match="prompt"):
        judge_pairs([r], js, [wrong_prompt], position_weights="global", **kw)
    with pytest.raises(ValueError, match="position_weights"):
        judge_pairs([r], js, [_verdict(js[0].id, js[1].id, "A")], position_weights="half", **kw)


# ------------------------------------------------------------------------------------------------ share cap


def _pair(k: int) -> PreferencePair:
    return PreferencePair(kind="judge", prompt_id=f"p{k}", prompt="q", chosen="c", rejected="r",
                          chosen_id=f"c{k}", rejected_id=f"r{k}", chosen_score=5.0, rejected_score=1.0)


def test_cap_judge_share_arithmetic():
    """85 actor pairs, max_share 0.15: floor(0.15 / 0.85 * 85) = 15 judge pairs kept of 40 -> 25 dropped,
    and 15 / (85 + 15) = 0.15. Kept pairs keep their order; the same seed keeps the same subset."""
    actor, judge = [_pair(k) for k in range(85)], [_pair(k) for k in range(40)]
    kept, dropped = cap_judge_share(actor, judge, 0.15, seed=3)
    assert (len(kept), dropped) == (15, 25)
    assert len(kept) / (len(actor) + len(kept)) == pytest.approx(0.15)
    idx = [judge.index(p) for p in kept]
    assert idx == sorted(idx)
    assert cap_judge_share(actor, judge, 0.15, seed=3)[0] == kept
    assert cap_judge_share(actor, judge, 0.15, seed=4)[0] != kept


def test_cap_judge_share_edges():
    """None and 1.0 keep all; under the cap nothing drops; 1/3 of 4 actor pairs -> floor(0.5 * 4) = 2
    (computed as 1.9999999999999998 without the nudge); no actor pairs -> no judge pairs."""
    judge = [_pair(k) for k in range(5)]
    assert cap_judge_share([], judge, None, seed=0) == (judge, 0)
    assert cap_judge_share([], judge, 1.0, seed=0) == (judge, 0)
    assert cap_judge_share([_pair(0)] * 100, judge, 0.15, seed=0) == (judge, 0)
    assert len(cap_judge_share([_pair(0)] * 4, judge, 1 / 3, seed=0)[0]) == 2
    assert cap_judge_share([], judge, 0.15, seed=0) == ([], 5)


def test_doctests():
    """The docstring examples are real input/output."""
    result = doctest.testmod(pairs_module)
    assert result.attempted > 0 and result.failed == 0
