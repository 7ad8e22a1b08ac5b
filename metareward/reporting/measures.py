"""The judge-free measures of a benchmark as every report shows them: IFEval (instructions checked by code), LLMBar
(the model's own judge on pairs whose better output is known) and the drift guard's figures (the own judge against
a fixed reference judge). Pure functions over a benchmark manifest's ``stats`` or the iteration summary's copy of
them (`compact` keeps the same shape), shared by the summary, the run report's tables and plots, tracking and the
export card, so each figure has one name and one format everywhere.

    >>> interval({"value": 0.4167, "lo": 0.25, "hi": 0.5833, "n": 12, "rounds": 1000})
    '0.4167 [0.25, 0.58] (n=12)'
    >>> figures({"llmbar": {"pooled": {"accuracy": 0.5, "n": 8, "accuracy_ci95": {"value": 0.5, "lo": 0.25,
    ...                                                                            "hi": 0.75, "n": 8}}}})
    {'llmbar/accuracy': 0.5, 'llmbar/accuracy_lo': 0.25, 'llmbar/accuracy_hi': 0.75, 'llmbar/n': 8}
"""

from __future__ import annotations

IFEVAL = {"prompt_level_strict_acc": "IFEval prompt-level strict", "inst_level_strict_acc": "IFEval instruction-level strict",
          "prompt_level_loose_acc": "IFEval prompt-level loose", "inst_level_loose_acc": "IFEval instruction-level loose"}
IFEVAL_KEPT = ("n_prompts", "n_instructions", "judge", "label", "mean_chars")
LLMBAR_KEPT = ("accuracy", "agreement", "correct_both", "n", "accuracy_ci95")
LLMBAR_SHOWN = {"accuracy": "LLMBar accuracy", "agreement": "LLMBar agreement", "correct_both": "LLMBar correct_both"}
# drift rows: (quantity, own judge's key, reference judge's key, own minus reference's key); {prev} and {cur} are
# the two models whose answers were judged
DRIFT_ROWS = (("mean score, {prev}'s answers", "own_prev", "ref_prev", None),
              ("mean score, {cur}'s answers", "own_cur", "ref_cur", "gap"),
              ("change ({cur}'s - {prev}'s)", "own_change", "ref_change", None),
              ("prefers {cur}'s answer to {prev}'s (ties half)", "self_preference", "ref_preference",
               "self_preference_excess"),
              ("preferred answer, mean chars", "own_preferred_chars", "ref_preferred_chars", None))


def _num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and v == v  # v == v drops NaN


def fmt(v) -> str:
    """A figure to 4 significant digits; '-' for none."""
    if v is None:
        return "-"
    return f"{v:.4g}" if _num(v) and isinstance(v, float) else str(v)


def interval(ci: dict | None, value=None) -> str:
    """``value [lo, hi] (n=N)``: the bounds to 2 decimals (a bootstrap over a few hundred items is no finer);
    the figure alone where there is no interval."""
    ci = ci or {}
    v = ci["value"] if ci.get("value") is not None else value
    if v is None:
        return "-"
    text = fmt(v)
    if _num(ci.get("lo")) and _num(ci.get("hi")):
        text += f" [{ci['lo']:.2f}, {ci['hi']:.2f}]"
    return text + (f" (n={ci['n']})" if ci.get("n") is not None else "")


def with_n(v, n) -> str:
    return fmt(v) + (f" (n={n})" if n is not None and v is not None else "")


# ------------------------------------------------------------------------------------------------ the summary's copy


def compact(stats: dict) -> dict:
    """The measures of a benchmark's stats that the summary keeps: IFEval's four figures with their intervals
    and counts, LLMBar's headline figures pooled and per set, every drift figure (the per-category and
    per-instruction breakdowns and the kappas stay in the manifest)."""
    out = {}
    ifeval = stats.get("ifeval")
    if isinstance(ifeval, dict):
        ci = ifeval.get("ci95") or {}
        out["ifeval"] = {**{k: ifeval.get(k) for k in IFEVAL}, "ci95": {k: ci.get(k) for k in IFEVAL if k in ci},
                         **{k: ifeval[k] for k in IFEVAL_KEPT if k in ifeval}}
    llmbar = stats.get("llmbar")
    if isinstance(llmbar, dict):
        out["llmbar"] = {"judge": llmbar.get("judge"), "verdicts": llmbar.get("verdicts"),
                         "pooled": _llmbar_kept(llmbar.get("pooled")),
                         "sets": {name: _llmbar_kept(s) for name, s in (llmbar.get("sets") or {}).items()}}
    if isinstance(stats.get("drift"), dict):
        out["drift"] = dict(stats["drift"])
    return out


def _llmbar_kept(s: dict | None) -> dict:
    return {k: s.get(k) for k in LLMBAR_KEPT if k in s} if isinstance(s, dict) else {}


# ------------------------------------------------------------------------------------------------ table rows


def bench_rows(stats: dict) -> list[list]:
    """[metric, value, judge, label] rows of the benchmark table: IFEval's four figures (judge: none, checked by
    code) and LLMBar's pooled figures (judge: the model's own; label: how its verdicts were read)."""
    rows = []
    ifeval = stats.get("ifeval")
    if isinstance(ifeval, dict):
        ci = ifeval.get("ci95") or {}
        rows += [[name, interval(ci.get(k), ifeval.get(k)), ifeval.get("judge"), ifeval.get("label")]
                 for k, name in IFEVAL.items() if ifeval.get(k) is not None]
    llmbar = stats.get("llmbar")
    pooled = (llmbar or {}).get("pooled") if isinstance(llmbar, dict) else None
    if pooled:
        rows += [[f"{name}, pooled", _llmbar_value(pooled, k), llmbar.get("judge"), llmbar.get("verdicts")]
                 for k, name in LLMBAR_SHOWN.items() if pooled.get(k) is not None]
    return rows


def _llmbar_value(s: dict, key: str) -> str:
    return interval(s.get("accuracy_ci95"), s.get("accuracy")) if key == "accuracy" else with_n(s.get(key), s.get("n"))


def llmbar_set_rows(stats: dict) -> list[list]:
    """[set, accuracy with interval, agreement, correct_both, n, judge] per LLMBar set, then the pooled row."""
    llmbar = stats.get("llmbar")
    if not isinstance(llmbar, dict):
        return []
    named = [*(llmbar.get("sets") or {}).items(), *([("pooled", llmbar["pooled"])] if llmbar.get("pooled") else [])]
    return [[name, interval(s.get("accuracy_ci95"), s.get("accuracy")), s.get("agreement"), s.get("correct_both"),
             s.get("n"), llmbar.get("judge")] for name, s in named]


def drift_rows(drift: dict, gate: dict | None = None) -> list[list]:
    """[quantity, own judge, reference judge, own - reference] rows; then the answers' lengths, the prompts and,
    where the gate has run, its result."""
    prev, _, cur = (drift.get("answers") or "M_{t-1} vs M_t").partition(" vs ")
    rows = [[q.format(prev=prev, cur=cur), drift.get(own), drift.get(ref), drift.get(diff) if diff else None]
            for q, own, ref, diff in DRIFT_ROWS]
    rows += [[f"answers' mean chars ({prev}, {cur})", drift.get("prev_chars"), drift.get("cur_chars"), None],
             ["prompts", drift.get("prompts"), None, None]]
    if gate:
        rows.append(["drift gate", gate_text(gate), None, None])
    return rows


def gate_text(gate: dict) -> str:
    return "passed" if gate.get("passed") else "FAILED: " + "; ".join(gate.get("failed") or [])


def drift_columns(drift: dict) -> list[str]:
    return ["quantity", f"own judge ({drift.get('own_judge', 'M_t')})",
            f"reference judge ({drift.get('reference_judge', '-')})", "own - reference"]


# ------------------------------------------------------------------------------------------------ flat figures


def figures(stats: dict) -> dict[str, float]:
    """The measures as flat numbers for curves and trackers: ``ifeval/<figure>`` with ``_lo``/``_hi`` and the
    counts, ``llmbar/<figure>`` pooled and ``llmbar/<set>/<figure>``, ``drift/<figure>``."""
    out: dict[str, float] = {}
    ifeval = stats.get("ifeval")
    if isinstance(ifeval, dict):
        for k in IFEVAL:
            out.update(_with_bounds(f"ifeval/{k}", ifeval.get(k), (ifeval.get("ci95") or {}).get(k)))
        out.update({f"ifeval/{k}": ifeval[k] for k in ("n_prompts", "n_instructions") if _num(ifeval.get(k))})
    llmbar = stats.get("llmbar")
    if isinstance(llmbar, dict):
        out.update(_llmbar_figures("llmbar", llmbar.get("pooled") or {}))
        for name, s in (llmbar.get("sets") or {}).items():
            out.update(_llmbar_figures(f"llmbar/{name}", s))
    drift = stats.get("drift")
    if isinstance(drift, dict):
        out.update({f"drift/{k}": v for k, v in drift.items() if _num(v)})
    return out


def _with_bounds(name: str, value, ci: dict | None) -> dict:
    ci = ci or {}
    v = value if _num(value) else ci.get("value")
    if not _num(v):
        return {}
    return {name: v, **{f"{name}_{b}": ci[b] for b in ("lo", "hi") if _num(ci.get(b))}}


def _llmbar_figures(prefix: str, s: dict) -> dict:
    out = _with_bounds(f"{prefix}/accuracy", s.get("accuracy"), s.get("accuracy_ci95"))
    out.update({f"{prefix}/{k}": s[k] for k in ("agreement", "correct_both", "n") if _num(s.get(k))})
    return out


def card_lines(stats: dict) -> list[str]:
    """One markdown list line per measure, for the export's cards: the figures with intervals and the judge."""
    out = []
    ifeval = stats.get("ifeval")
    if isinstance(ifeval, dict):
        ci = ifeval.get("ci95") or {}
        figs = ", ".join(f"{k} {interval(ci.get(k), ifeval.get(k))}" for k in IFEVAL if ifeval.get(k) is not None)
        out.append(f"  - ifeval: {figs} (judge {ifeval.get('judge')})")
    llmbar = stats.get("llmbar")
    if isinstance(llmbar, dict) and llmbar.get("pooled"):
        p = llmbar["pooled"]
        out.append(f"  - llmbar: accuracy {interval(p.get('accuracy_ci95'), p.get('accuracy'))}, agreement "
                   f"{fmt(p.get('agreement'))}, correct_both {fmt(p.get('correct_both'))} (judge {llmbar.get('judge')})")
    d = stats.get("drift")
    if isinstance(d, dict):
        out.append(f"  - drift: own judge {fmt(d.get('own_cur'))} vs reference {fmt(d.get('ref_cur'))} on "
                   f"{d.get('answers')} (gap {fmt(d.get('gap'))}), prefers the newer answer {fmt(d.get('self_preference'))}"
                   f" vs {fmt(d.get('ref_preference'))} (excess {fmt(d.get('self_preference_excess'))}); own judge "
                   f"{d.get('own_judge')}, reference {d.get('reference_judge')}")
    return out
