"""The report's figures as PNG bytes (matplotlib, Agg backend, imported inside each call).

One function per figure, each ``(RunReport) -> bytes``; `figures` returns all of them by file name:

- judge_scores.png: density of the judge's scores per iteration (the paper's Figure 5);
- lengths.png: mean response length per iteration, all responses and the chosen/rejected sides of actor pairs;
- benchmarks.png: each benchmark metric per model M_t (iteration 0 = the seed model);
- judge_agreement.png: the judge's self-agreement and, when labels are configured, agreement with humans;
- meta_bias.png: the meta-judge's position bias and score bias per iteration (0.5 = no bias).
"""

from __future__ import annotations

import io

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


FIGURES = {"judge_scores.png": judge_scores, "lengths.png": lengths, "benchmarks.png": benchmarks,
           "judge_agreement.png": judge_agreement, "meta_bias.png": meta_bias_rates}


def figures(rep: RunReport) -> dict[str, bytes]:
    return {name: fn(rep) for name, fn in FIGURES.items()}
