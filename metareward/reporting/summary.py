"""The iteration summary: counts, judge health, pair statistics and the benchmark, from the manifests alone.

Written to the iteration's ``summary.json`` and ``summary.md`` (`metareward.runstore.layout`) at the end of each iteration, and printed by the
CLI, so nobody needs to open a JSONL file to see what an iteration did.
"""

from __future__ import annotations

from metareward.config import RunConfig
from metareward.records import Manifest
from metareward.reporting import measures
from metareward.runstore import store
from metareward.runstore.layout import RunLayout


def stored_manifests(cfg: RunConfig, t: int) -> dict[str, Manifest]:
    """What iteration t's summary is drawn from, as the run store holds it: the manifests of the iteration's
    stages (meta_judge only where the iteration runs it) and, at t = 1, those of the iteration-0 stages this run
    ran (prompt pool, EFT). A stage without a manifest is a StoreError naming its folder."""
    run = RunLayout.of(cfg)

    def read(it: int, stage: str) -> Manifest | None:
        return store.read_manifest(run.stage(it, stage))

    out = {}
    for stage in ("prompts", "generate", "judge", "pairs", "train") + (("meta_judge",) if cfg.at(t).judge_pairs else ()):
        out[stage] = read(t, stage)
        if out[stage] is None:
            raise store.StoreError(f"{run.stage(t, stage)}: no manifest")
    if t == 1:
        for stage in ("prompt_pool", "eft"):
            m = read(0, stage)
            if getattr(cfg, stage).enabled and m is not None:
                out[stage] = m
    return out


def benchmark_of(cfg: RunConfig, t: int) -> Manifest | None:
    """Iteration t's benchmark manifest (t = 0: M_0's), or None where it has none."""
    return store.read_manifest(RunLayout.of(cfg).stage(t, "benchmark"))


def drift_history(cfg: RunConfig, t: int) -> list[dict]:
    """The drift figures of iterations 1..t, oldest first, from their benchmark manifests (those without any
    left out: a run's drift guard may have been switched on late)."""
    out = []
    for it in range(1, t + 1):
        m = benchmark_of(cfg, it)
        if m is not None and "drift" in m.stats:
            out.append(m.stats["drift"])
    return out


def iteration_summary(t: int, manifests: dict[str, Manifest], baseline: Manifest | None = None) -> dict:
    """One dict per iteration; ``manifests`` maps stage name -> manifest (meta_judge may be absent)."""
    g, j, p = manifests["generate"], manifests["judge"], manifests["pairs"]
    meta = manifests.get("meta_judge")
    out = {
        "iteration": t,
        "prompts": manifests["prompts"].counts.get("prompts"),
        "responses": g.counts.get("responses"),
        "response_mean_chars": g.stats.get("mean_chars"),
        "judgments": j.counts.get("judgments"),
        "judge_parse_rate": j.stats.get("parse_rate"),
        "judge_mean_score": j.stats.get("mean_score"),
        "score_histogram": j.stats.get("score_histogram"),
        "meta_judge_calls": meta.counts.get("calls") if meta else 0,
        "meta_judge_decided": meta.counts.get("decided") if meta else 0,
        "actor_pairs": p.counts.get("actor_pairs"),
        "judge_pairs": p.counts.get("judge_pairs"),
        "pair_skips": {k: v for k, v in p.counts.items() if "_" in k and k.split("_", 1)[0] in ("actor", "judge")
                       and not k.endswith("_pairs")},
        "actor_chosen_mean_chars": p.stats.get("actor_chosen_mean_chars"),
        "actor_rejected_mean_chars": p.stats.get("actor_rejected_mean_chars"),
        "position_weights": {k: p.stats.get("meta_judge", {}).get(k) for k in ("w1", "w2")},
        "durations_s": {name: m.duration_s for name, m in manifests.items()},
        "model": manifests["train"].files.get("model") if "train" in manifests else None,
    }
    if "train" in manifests:
        tr = manifests["train"]
        out["train"] = {k: tr.stats.get(k) for k in ("steps", "train_loss", "final_rewards_accuracies", "final_rewards_margins",
                                                    "sec_per_step")}
    if "benchmark" in manifests:
        out["benchmark"] = _bench(manifests["benchmark"])
    out.update(_before_iteration_1(manifests))
    if baseline is not None:
        out["benchmark_baseline"] = _bench(baseline)
    return out


def _before_iteration_1(manifests: dict[str, Manifest]) -> dict:
    """Prompt cleaning, and in iteration 1 the iteration-0 stages when they ran (prompt pool, EFT)."""
    out = {"prompts_contaminated": manifests["prompts"].counts.get("contaminated")}
    if "prompt_pool" in manifests:
        out["prompt_pool"] = {k: manifests["prompt_pool"].counts.get(k)
                              for k in ("requests", "parsed", "generated_kept", "generated_contaminated", "pool")}
    if "eft" in manifests:
        e = manifests["eft"]
        out["eft"] = {"examples": e.counts.get("examples"), "steps": e.counts.get("steps"),
                      **{f"agreement_{when}": (e.stats.get(f"agreement_{when}") or {}).get("agreement")
                         for when in ("before", "after")}}
    return out


def _bench(m: Manifest) -> dict:
    out = {k: m.stats.get(k) for k in ("model_iteration", "mean_chars", "mean_score", "parse_rate", "judge")}
    for name, keys in _PUBLIC.items():  # each result with the judge that produced it and its comparability
        if name in m.stats:
            out[name] = {k: m.stats[name].get(k) for k in keys + ("judge", "label") if k in m.stats[name]}
    out.update(measures.compact(m.stats))  # IFEval, LLMBar, drift: the same shape as the stats, fewer keys
    return out


_PUBLIC = {"mt_bench": ("score", "turn_1", "turn_2", "n", "n_failed"),
           "alpaca_eval": ("win_rate", "standard_error", "lc_win_rate", "lc_win_rate_approx", "n_total"),
           "arena_hard": ("score", "ci_low", "ci_high", "display"),
           "judge_quality": ("agreement", "agreement_without_ties", "spearman", "kendall_tau", "n")}


def _fmt(v) -> str:
    """A value for the terminal and summary.md: floats to 4 significant digits (the manifests keep full ones)."""
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _pairs(d: dict) -> str:
    return ", ".join(f"{k} {_fmt(v)}" for k, v in d.items())


def _bench_table(summary: dict) -> list[str]:
    """The run report's benchmark table (`metareward.reporting.tables.benchmark_table`: M_0 beside M_t, each result with
    its judge and label) for this summary, and the benchmark answers' mean length."""
    from metareward.reporting.tables import Table, bench_rows, table_markdown

    cols = [summary[label] for label in ("benchmark_baseline", "benchmark") if label in summary]
    if not cols:
        return []
    tab = Table(f"Iteration {summary['iteration']}: benchmark", ["model", "metric", "value", "judge", "label"])
    for b in cols:
        tab.rows += bench_rows(b)
    chars = ", ".join(f"M_{b.get('model_iteration')} {_fmt(b.get('mean_chars'))}" for b in cols)
    return ["", table_markdown(tab).rstrip("\n"), "", f"Benchmark answers, mean chars: {chars}", *_measure_tables(summary)]


def _measure_tables(summary: dict) -> list[str]:
    """LLMBar per set (M_0 beside M_t), and M_t's drift figures with the gate's result where it has run."""
    from metareward.reporting.tables import drift_stats_table, llmbar_sets_table, table_markdown

    t, out = summary["iteration"], []
    cols = [(b.get("model_iteration"), b) for label in ("benchmark_baseline", "benchmark")
            if "llmbar" in (b := summary.get(label) or {})]
    if cols:
        out += ["", table_markdown(llmbar_sets_table(f"Iteration {t}: LLMBar per set", cols)).rstrip("\n")]
    drift = (summary.get("benchmark") or {}).get("drift")
    if drift:
        tab = drift_stats_table(f"Iteration {t}: drift ({drift.get('answers')})", drift, summary.get("drift_gate"))
        out += ["", table_markdown(tab).rstrip("\n")]
    return out


def to_markdown(summary: dict) -> str:
    lines = [f"# Iteration {summary['iteration']}", "", "| quantity | value |", "|---|---|"]
    for key in ("prompts", "responses", "response_mean_chars", "judgments", "judge_parse_rate", "judge_mean_score",
                "meta_judge_calls", "meta_judge_decided", "actor_pairs", "judge_pairs",
                "actor_chosen_mean_chars", "actor_rejected_mean_chars"):
        lines.append(f"| {key} | {_fmt(summary.get(key))} |")
    lines += ["", "Score histogram (rounded points): " + ", ".join(f"{k}: {v}" for k, v in
                                                                   (summary.get("score_histogram") or {}).items())]
    lines.append("Pairs skipped: " + (", ".join(f"{k}: {v}" for k, v in summary["pair_skips"].items()) or "none"))
    if "train" in summary:
        lines.append("Training: " + _pairs(summary["train"]))
    for label in ("prompt_pool", "eft"):
        if label in summary:
            lines.append(f"{label}: " + _pairs(summary[label]))
    lines += _bench_table(summary)
    lines += ["", "Stage seconds: " + ", ".join(f"{k} {v:.1f}" if isinstance(v, float) else f"{k} {_fmt(v)}"
                                                for k, v in summary["durations_s"].items())]
    return "\n".join(lines) + "\n"


def with_drift_gate(run: RunLayout, summary: dict) -> dict:
    """The summary with ``drift_gate`` ({passed, failed}) from its iteration's health.json, where the gate has run."""
    from metareward.reporting.tables import drift_gate

    gate = drift_gate(run, summary["iteration"])
    return {**summary, "drift_gate": gate} if gate is not None else summary


def write_summary(run: RunLayout, summary: dict) -> str:
    """The summary as JSON and markdown in its iteration's folder; returns the markdown's URI."""
    summary = with_drift_gate(run, summary)
    t = summary["iteration"]
    store.write_json(run.summary(t, "json"), summary)
    store.write_bytes(run.summary(t, "md"), to_markdown(summary).encode())
    return run.summary(t, "md")
