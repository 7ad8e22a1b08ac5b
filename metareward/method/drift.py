"""The drift guard: does the model's own judge still agree with a fixed one? Pure functions over scores.

A model that judges itself can come to prefer its own style, length or verbosity while a fixed judge disagrees
(Rubric Dropout: the training judge's score keeps rising while a gold judge's falls). Each iteration t, M_t's own
judge and a fixed reference judge (M_0 by default) score the same held-out answers of M_{t-1} ("prev") and of M_t
("cur"). From those four score lists:

- own_prev, own_cur, ref_prev, ref_cur: each judge's mean score of each model's answers;
- own_change = own_cur - own_prev, ref_change = ref_cur - ref_prev; gap = own_cur - ref_cur;
- self_preference: how often the own judge prefers M_t's answer to M_{t-1}'s on the same prompt (a tie counts
  half), ref_preference: the same for the reference; self_preference_excess = self_preference - ref_preference;
- the mean length (characters) of the answers each judge prefers (ties left out), beside both models' means;
- 95% bootstrap intervals (`metareward.intervals`, prompts resampled) of the two changes and of the excess, over
  the prompts both scores of the pair exist for (paired: each prompt's own difference).

Example, 2 prompts; own scores prev (3, 4), cur (5, 4); reference prev (3, 4), cur (2, 4)::

    own_prev 3.5, own_cur 4.5, ref_prev 3.5, ref_cur 3.0: own_change +1.0, ref_change -0.5, gap 1.5
    self_preference (1 + 0.5) / 2 = 0.75, ref_preference (0 + 0.5) / 2 = 0.25, excess 0.5
    per prompt: own changes (2, 0), reference changes (-1, 0), excess (1 - 0, 0.5 - 0.5) = (1, 0)

Gates (`failed_gates`) read the intervals, so that the noise of a few held-out prompts trips nothing: the own
judge's change is above ``min_change`` and the reference's below ``-min_change`` at the 95% level (the interval's
low, resp. high, end) in the last ``k`` iterations in a row; or the excess's low end passes
``max_self_preference_excess``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from metareward.intervals import bootstrap

if TYPE_CHECKING:
    from metareward.config import DriftSection


def _mean(xs: list[float]) -> float | None:
    return round(sum(xs) / len(xs), 4) if xs else None


def _prefers_cur(prev: float, cur: float) -> float:
    return 1.0 if cur > prev else 0.5 if cur == prev else 0.0


def _preference(prev: dict[str, float], cur: dict[str, float]) -> float | None:
    """The share of prompts scored in both where cur scores above prev, ties counting half."""
    common = sorted(set(prev) & set(cur))
    return _mean([_prefers_cur(prev[p], cur[p]) for p in common])


def _preferred_chars(prev: dict[str, float], cur: dict[str, float], texts: dict[str, dict[str, str]]) -> float | None:
    common = sorted(set(prev) & set(cur))
    return _mean([len(texts["cur" if cur[p] > prev[p] else "prev"][p]) for p in common if cur[p] != prev[p]])


def _intervals(own: dict[str, dict[str, float]], ref: dict[str, dict[str, float]], seed: int) -> dict:
    """Paired 95% intervals: each judge's per-prompt change, and the per-prompt excess of preferences."""
    def changes(j):
        return [j["cur"][p] - j["prev"][p] for p in sorted(set(j["prev"]) & set(j["cur"]))]

    both = sorted(set(own["prev"]) & set(own["cur"]) & set(ref["prev"]) & set(ref["cur"]))
    excess = [_prefers_cur(own["prev"][p], own["cur"][p]) - _prefers_cur(ref["prev"][p], ref["cur"][p]) for p in both]
    return {"own_change_ci95": bootstrap(changes(own), seed=seed), "ref_change_ci95": bootstrap(changes(ref), seed=seed),
            "self_preference_excess_ci95": bootstrap(excess, seed=seed)}


def metrics(own: dict[str, dict[str, float]], ref: dict[str, dict[str, float]],
            texts: dict[str, dict[str, str]], seed: int = 0) -> dict:
    """The drift figures of one iteration. ``own``/``ref``: {"prev": {prompt_id: score}, "cur": {...}} (a prompt
    a judge left unscored is absent); ``texts``: {"prev": {prompt_id: answer}, "cur": {...}}."""
    def change(a, b):
        return None if a is None or b is None else round(b - a, 4)

    own_prev, own_cur = _mean(list(own["prev"].values())), _mean(list(own["cur"].values()))
    ref_prev, ref_cur = _mean(list(ref["prev"].values())), _mean(list(ref["cur"].values()))
    self_pref, ref_pref = _preference(own["prev"], own["cur"]), _preference(ref["prev"], ref["cur"])
    return {
        "prompts": len(set(texts["prev"]) & set(texts["cur"])),
        "own_prev": own_prev, "own_cur": own_cur, "ref_prev": ref_prev, "ref_cur": ref_cur,
        "own_change": change(own_prev, own_cur), "ref_change": change(ref_prev, ref_cur),
        "gap": change(ref_cur, own_cur),
        "self_preference": self_pref, "ref_preference": ref_pref,
        "self_preference_excess": change(ref_pref, self_pref),
        "own_preferred_chars": _preferred_chars(own["prev"], own["cur"], texts),
        "ref_preferred_chars": _preferred_chars(ref["prev"], ref["cur"], texts),
        "prev_chars": _mean([len(x) for x in texts["prev"].values()]),
        "cur_chars": _mean([len(x) for x in texts["cur"].values()]),
        **_intervals(own, ref, seed),
    }


def _bound(m: dict, figure: str, end: str) -> float | None:
    """The interval's ``end`` ('lo' or 'hi') of ``figure``; the figure itself where no interval was kept."""
    ci = m.get(f"{figure}_ci95")
    return ci.get(end) if isinstance(ci, dict) else m.get(figure)


def diverged(m: dict, min_change: float) -> bool:
    """The own judge's mean rose while the reference's fell, each by more than ``min_change`` at the 95% level."""
    own, ref = _bound(m, "own_change", "lo"), _bound(m, "ref_change", "hi")
    return own is not None and ref is not None and own > min_change and -ref > min_change


def failed_gates(history: list[dict], cfg: DriftSection) -> list[str]:
    """One line per failed gate, naming its config key. ``history``: the drift metrics of iterations 1..t in order
    (the last is iteration t's)."""
    if not history:
        return []
    failed = []
    last = history[-1]
    run = 0
    for m in reversed(history):
        if not diverged(m, cfg.min_change):
            break
        run += 1
    if run >= cfg.k:
        failed.append(f"health.drift.k: the own judge's mean rose while the reference's fell in {run} iterations in "
                      f"a row (own {last['own_change']:+}, 95% low {_bound(last, 'own_change', 'lo'):+}; reference "
                      f"{last['ref_change']:+}, 95% high {_bound(last, 'ref_change', 'hi'):+} at the last) >= {cfg.k}")
    low = _bound(last, "self_preference_excess", "lo")
    if low is not None and low > cfg.max_self_preference_excess:
        failed.append(f"health.drift.max_self_preference_excess: self_preference_excess "
                      f"{last['self_preference_excess']} (95% low {low}) > {cfg.max_self_preference_excess} (own "
                      f"{last['self_preference']}, reference {last['ref_preference']})")
    return failed
