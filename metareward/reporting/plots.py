"""The report's figures as PNG bytes (matplotlib, Agg backend, imported inside each call).

One function per figure, each ``(RunReport) -> bytes``; `figures` returns all of them by file name:

- judge_scores.png: density of the judge's scores per iteration (the paper's Figure 5);
- lengths.png: mean response length per iteration, all responses and the chosen/rejected sides of actor pairs;
- benchmarks.png: each benchmark metric per model M_t (iteration 0 = the seed model);
- judge_agreement.png: the judge's self-agreement and, when labels are configured, agreement with humans;
- meta_bias.png: the meta-judge's position bias and score bias per iteration (0.5 = no bias);
- judge_free.png: IFEval's four accuracies and LLMBar's pooled accuracy per model M_t, 95% intervals as error bars;
- drift.png: the own judge against the reference judge per iteration: their mean scores of M_t's held-out answers
  and the gap, and how often each prefers M_t's answer to M_{t-1}'s (self-preference vs the reference's).
"""

from __future__ import annotations

import io

from metareward.reporting import measures
from metareward.reporting.tables import BENCH_METRICS, RunReport, bench_values, meta_bias

SCORE_BINS = [i / 4 for i in range(21)]  # 0, 0.25, ..., 5: expected scores fall between the rubric's points


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    _pyplot().close(fig)
    return buf.getvalue()


def _axes(title: str, xlabel: str, ylabel: str):
    fig, ax = _pyplot().subplots(figsize=(6, 3.6))
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    return fig, ax


def _training(rep: RunReport):
    return [(t, it) for t, it in sorted(rep.iterations.items()) if t > 0 and "judge" in it.manifests]


def _finish(fig, ax, empty: bool) -> bytes:
    if empty:
        ax.text(0.5, 0.5, "no data yet", ha="center", va="center", transform=ax.transAxes)
    elif ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    return _png(fig)


def judge_scores(rep: RunReport) -> bytes:
    fig, ax = _axes("Judge score density per iteration", "score", "density")
    its = [(t, it) for t, it in _training(rep) if it.scores]
    for t, it in its:
        ax.hist(it.scores, bins=SCORE_BINS, density=True, histtype="step", linewidth=1.6,
                label=f"iteration {t} (n={len(it.scores)})")
    ax.set_xlim(0, 5)
    return _finish(fig, ax, not its)


def lengths(rep: RunReport) -> bytes:
    fig, ax = _axes("Response length per iteration", "iteration", "mean characters")
    its = _training(rep)
    for name, attr, style in (("all", "response_chars", "o-"), ("chosen", "chosen_chars", "s-"),
                              ("rejected", "rejected_chars", "v-")):
        pts = [(t, sum(getattr(it, attr)) / len(getattr(it, attr))) for t, it in its if getattr(it, attr)]
        if pts:
            ax.plot(*zip(*pts), style, label=name)
    ax.set_xticks([t for t, _ in its])
    return _finish(fig, ax, not its)


def benchmarks(rep: RunReport) -> bytes:
    """One panel per metric (their scales differ: 0-5, 1-10, percent), x = the model iteration t."""
    series: dict[str, list] = {}
    for t, it in sorted(rep.iterations.items()):
        if "benchmark" in it.manifests:
            for name, (v, _, _) in bench_values(it.manifests["benchmark"].stats).items():
                if v is not None:
                    series.setdefault(name, []).append((t, v))
    n = max(1, len(series))
    fig, axes = _pyplot().subplots(1, n, figsize=(2.6 * n + 1.0, 3.4), squeeze=False)
    fig.suptitle("Benchmarks per model M_t")
    for ax, (name, pts) in zip(axes[0], series.items()):
        ax.plot(*zip(*pts), "o-")
        ax.set_title(BENCH_METRICS[name][2], fontsize=9)
        ax.set_xlabel("model iteration t")
        ax.set_xticks([t for t, _ in pts])
        ax.grid(alpha=0.3)
    if not series:
        axes[0][0].text(0.5, 0.5, "no data yet", ha="center", va="center", transform=axes[0][0].transAxes)
    fig.tight_layout()
    return _png(fig)


def judge_agreement(rep: RunReport) -> bytes:
    fig, ax = _axes("Judge agreement per iteration", "iteration", "agreement")
    its = _training(rep)
    mine = [(t, it.self_agreement) for t, it in its if it.self_agreement is not None]
    if mine:
        ax.plot(*zip(*mine), "o-", label="self-agreement (same rounded score)")
    human = [(t, v[0]) for t, it in sorted(rep.iterations.items()) if "benchmark" in it.manifests
             for k, v in bench_values(it.manifests["benchmark"].stats).items() if k == "judge_quality" and v[0] is not None]
    if human:
        ax.plot(*zip(*human), "s-", label="agreement with human labels (M_t judge)")
    ax.set_ylim(0, 1.05)
    ax.set_xticks(sorted({t for t, _ in mine + human}))
    return _finish(fig, ax, not (mine or human))


def meta_bias_rates(rep: RunReport) -> bytes:
    fig, ax = _axes("Meta-judge bias per iteration", "iteration", "share of verdicts")
    its = [(t, meta_bias(it)) for t, it in _training(rep) if meta_bias(it)]
    for key, label, style in (("position_bias", "won by first position", "o-"),
                              ("score_bias", "won by higher score", "s-")):
        pts = [(t, b[key]) for t, b in its if b.get(key) is not None]
        if pts:
            ax.plot(*zip(*pts), style, label=label)
    ax.axhline(0.5, color="grey", linestyle=":", linewidth=1)
    ax.set_ylim(0, 1.05)
    ax.set_xticks([t for t, _ in its])
    return _finish(fig, ax, not its)


def _measures(rep: RunReport) -> dict[int, dict[str, float]]:
    """Model iteration t -> its benchmark's judge-free figures (`measures.figures`), where it has any."""
    out = {t: measures.figures(it.manifests["benchmark"].stats) for t, it in sorted(rep.iterations.items())
           if "benchmark" in it.manifests}
    return {t: f for t, f in out.items() if f}


def _curve(ax, pts: dict[int, dict], name: str, label: str, style: str, shift: float = 0.0) -> bool:
    """One figure per iteration, with its interval as error bars where it has one; False when it has no point."""
    xs = [(t, f) for t, f in pts.items() if name in f]
    if not xs:
        return False
    # max(0, ...): a bound rounded past its figure must not turn into a negative bar (matplotlib refuses one)
    lows = [max(0.0, f[name] - f.get(f"{name}_lo", f[name])) for _, f in xs]
    highs = [max(0.0, f.get(f"{name}_hi", f[name]) - f[name]) for _, f in xs]
    ax.errorbar([t + shift for t, _ in xs], [f[name] for _, f in xs], yerr=[lows, highs], fmt=style, capsize=3,
                label=label)
    return True


def _panels(n: int, title: str):
    fig, axes = _pyplot().subplots(1, n, figsize=(5.2 * n, 3.6), squeeze=False)
    fig.suptitle(title)
    for ax in axes[0]:
        ax.grid(alpha=0.3)
        ax.set_xlabel("model iteration t")
    return fig, axes[0]


def _end(fig, axes, drawn: list[bool], ticks: list[int]) -> bytes:
    for ax, any_points in zip(axes, drawn):
        if not any_points:
            ax.text(0.5, 0.5, "no data yet", ha="center", va="center", transform=ax.transAxes)
        elif ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
        ax.set_xticks(ticks)
    fig.tight_layout()
    return _png(fig)


def judge_free(rep: RunReport) -> bytes:
    """IFEval (checked by code) and LLMBar (the own judge on labelled pairs) per model M_t, M_0 at t = 0."""
    pts = _measures(rep)
    fig, axes = _panels(2, "Judge-free measures per model M_t (95% intervals)")
    ifeval, llmbar = axes
    ifeval.set_title("IFEval accuracy (checked by code)", fontsize=9)
    # the four series a little apart so that their error bars do not hide each other
    drawn = [any([_curve(ifeval, pts, f"ifeval/{k}", name[len("IFEval "):], style, shift)
                  for (k, name), style, shift in zip(measures.IFEVAL.items(), ("o-", "s-", "^--", "v--"),
                                                     (-0.09, -0.03, 0.03, 0.09))])]
    llmbar.set_title("LLMBar accuracy, pooled (own judge)", fontsize=9)
    drawn.append(_curve(llmbar, pts, "llmbar/accuracy", "accuracy", "o-"))
    llmbar.axhline(0.5, color="grey", linestyle=":", linewidth=1)  # a judge that guesses
    for ax in axes:
        ax.set_ylim(-0.02, 1.02)
    return _end(fig, axes, drawn, sorted(pts))


def drift(rep: RunReport) -> bytes:
    """The own judge against the reference judge on the same held-out answers, per iteration t >= 1."""
    pts = {t: f for t, f in _measures(rep).items() if any(k.startswith("drift/") for k in f)}
    fig, axes = _panels(2, "Drift: the own judge against the reference judge")
    scores, prefs = axes
    scores.set_title("mean score of M_t's held-out answers", fontsize=9)
    drawn = [any([_curve(scores, pts, "drift/own_cur", "own judge", "o-"),
                  _curve(scores, pts, "drift/ref_cur", "reference judge", "s-"),
                  _curve(scores, pts, "drift/gap", "gap (own - reference)", "^--")])]
    scores.axhline(0, color="grey", linestyle=":", linewidth=1)
    prefs.set_title("share preferring M_t's answer to M_{t-1}'s", fontsize=9)
    drawn.append(any([_curve(prefs, pts, "drift/self_preference", "own judge (self-preference)", "o-"),
                      _curve(prefs, pts, "drift/ref_preference", "reference judge", "s-")]))
    prefs.axhline(0.5, color="grey", linestyle=":", linewidth=1)
    prefs.set_ylim(-0.02, 1.02)
    return _end(fig, axes, drawn, sorted(pts))


FIGURES = {"judge_scores.png": judge_scores, "lengths.png": lengths, "benchmarks.png": benchmarks,
           "judge_agreement.png": judge_agreement, "meta_bias.png": meta_bias_rates,
           "judge_free.png": judge_free, "drift.png": drift}


def figures(rep: RunReport) -> dict[str, bytes]:
    return {name: fn(rep) for name, fn in FIGURES.items()}
