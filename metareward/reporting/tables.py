"""The run as data, and its tables: manifests and records read back from the run store, the numbers each
table shows, and a table as Markdown or HTML. Pure: no Prefect, no model, no matplotlib (`metareward.reporting.plots`
draws from the same data, `metareward.reporting.report` writes the files).

Judge health, per iteration (the manifests' numbers, recomputed from the records where they are lists):

- parse rate: judgments with a score / all judgments; mean and standard deviation of the valid scores;
- score distribution: valid scores rounded to the rubric's points 0..5 (``floor(s + 0.5)``);
- tie rate: prompts skipped by the actor-pair builder because every response scored the same, / prompts;
- self-agreement: over the pairs of judgments of one response, the share that round to the same point.

Meta-judge bias (the paper's Table 5): position bias = expected share of decided verdicts won by the judgment
shown first; score bias = share won by the higher-scored judgment where the two scores differ.

The judge-free measures (IFEval, LLMBar, drift) are formatted by `metareward.reporting.measures`, each figure with
its 95% interval and sample size: ``0.4167 [0.25, 0.58] (n=12)``.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

from metareward.registry import STAGES
from metareward.reporting import measures
from metareward.runstore import integrity, store
from metareward.runstore.layout import RunLayout
from metareward.records import Judgment, Manifest, PreferencePair, Response

STAGE_ORDER = tuple(STAGES)


@dataclass
class Table:
    """A titled table; rows are lists in ``columns`` order. ``as_dicts`` is what a Prefect table artifact takes."""

    title: str
    columns: list[str]
    rows: list[list] = field(default_factory=list)

    def as_dicts(self) -> list[dict]:
        return [dict(zip(self.columns, (_fmt(v) for v in row))) for row in self.rows]


@dataclass
class IterationData:
    """One iteration's manifests and the per-record lists the plots need."""

    t: int
    manifests: dict[str, Manifest]
    scores: list[float] = field(default_factory=list)          # valid judge scores
    response_chars: list[int] = field(default_factory=list)    # every actor response
    chosen_chars: list[int] = field(default_factory=list)      # actor pairs
    rejected_chars: list[int] = field(default_factory=list)
    self_agreement: float | None = None
    drift_gate: dict | None = None  # health.json's drift record (passed, failed) once the gate has run


@dataclass
class RunReport:
    run: str
    uri: str
    iterations: dict[int, IterationData]

    def iteration_tables(self, t: int) -> list[Table]:
        return iteration_tables(self.iterations[t])

    def run_tables(self) -> list[Table]:
        # the judge-free tables only where a benchmark measured them (a run without IFEval or LLMBar has none)
        return [overview_table(self), benchmark_table(self),
                *(tab for tab in (measures_table(self), llmbar_table(self)) if tab.rows)]


# ------------------------------------------------------------------------------------------------ loading


def load_iteration(run_uri: str, t: int, model_cache: str | None = None) -> IterationData:
    """Iteration t's finished stages; a damaged one (a file missing or altered) is a one-line StoreError naming it."""
    run = RunLayout.at(run_uri)
    ms = {s: m for s in STAGE_ORDER if (m := integrity.checked(run.stage(t, s), model_cache)) is not None}
    it = IterationData(t=t, manifests=ms, drift_gate=drift_gate(run, t))
    if "judge" in ms:
        judgments = store.read_jsonl(ms["judge"].files["judgments"], Judgment)
        it.scores = [j.score for j in judgments if j.score is not None]
        it.self_agreement = self_agreement(judgments)
    if "generate" in ms:
        it.response_chars = [len(r.text) for r in store.read_jsonl(ms["generate"].files["responses"], Response)]
    if "pairs" in ms:
        actor = [p for p in store.read_jsonl(ms["pairs"].files["pairs"], PreferencePair) if p.kind == "actor"]
        it.chosen_chars = [len(p.chosen) for p in actor]
        it.rejected_chars = [len(p.rejected) for p in actor]
    return it


def drift_gate(run: RunLayout, t: int) -> dict | None:
    """Iteration t's drift gate result from its health.json ({passed, failed}), or None before the gate ran."""
    health = store.read_json(run.health(t)) if store.exists(run.health(t)) else {}
    record = health.get("drift") if isinstance(health, dict) else None
    return {"passed": record.get("passed"), "failed": record.get("failed") or []} if isinstance(record, dict) else None


def load_run(run_uri: str, upto: int | None = None) -> RunReport:
    """Every iteration folder of a run (iteration 0 holds the seed model's benchmark and the bootstrap), or those up
    to ``upto`` (the flow's report after iteration t: a later one is not resumed yet); a folder that holds no run is
    a StoreError, before anything is read or written."""
    run = RunLayout.at(run_uri).stored()
    its = {t: load_iteration(run_uri, t, model_cache(run)) for t in run.iterations() if upto is None or t <= upto}
    return RunReport(run=run_uri.rstrip("/").rsplit("/", 1)[-1], uri=run_uri, iterations=its)


def model_cache(run: RunLayout) -> str | None:
    """The run's ``storage.model_cache`` (where its model folders' digests are remembered), from its config.json."""
    cfg = store.read_json(run.config)
    storage = cfg.get("storage") if isinstance(cfg, dict) else None
    return storage.get("model_cache") if isinstance(storage, dict) else None


# ------------------------------------------------------------------------------------------------ numbers


def rubric_point(score: float) -> int:
    """A score rounded to the rubric's points, halves up: 2.5 -> 3, 2.49 -> 2."""
    return math.floor(score + 0.5)


def self_agreement(judgments: list[Judgment]) -> float | None:
    """Share of same-response judgment pairs whose scores round to the same point; None without any pair.

    Response r: scores 3, 3, 4 -> pairs (3,3) (3,4) (3,4): 1 of 3 agree.
    """
    by_resp: dict[str, list[int]] = {}
    for j in judgments:
        if j.score is not None:
            by_resp.setdefault(j.response_id, []).append(rubric_point(j.score))
    agree = [a == b for pts in by_resp.values() for a, b in itertools.combinations(pts, 2)]
    return sum(agree) / len(agree) if agree else None


def _mean(xs) -> float | None:
    xs = list(xs)
    return sum(xs) / len(xs) if xs else None


def _std(xs) -> float | None:
    xs = list(xs)
    if len(xs) < 2:
        return None
    m = sum(xs) / len(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def _median(xs) -> float | None:
    xs = sorted(xs)
    if not xs:
        return None
    mid = len(xs) // 2
    return float(xs[mid]) if len(xs) % 2 else (xs[mid - 1] + xs[mid]) / 2


def _ratio(a, b) -> float | None:
    return a / b if a is not None and b else None


def _fmt(v):
    if isinstance(v, float):
        return round(v, 4)
    return v


def tie_rate(it: IterationData) -> float | None:
    p = it.manifests.get("pairs")
    prompts = it.manifests.get("generate")
    if p is None or prompts is None:
        return None
    return _ratio(p.counts.get("actor_tie", 0), prompts.counts.get("prompts"))


def meta_bias(it: IterationData) -> dict:
    """The pairs stage's bias statistics of the meta-verdicts (empty without a meta-judge)."""
    return (it.manifests["pairs"].stats.get("meta_judge") or {}) if "pairs" in it.manifests else {}


# ------------------------------------------------------------------------------------------------ tables


def stage_table(it: IterationData) -> Table:
    tab = Table(f"Iteration {it.t}: stages", ["stage", "counts", "seconds", "uri"])
    for name, m in it.manifests.items():
        counts = ", ".join(f"{k} {v}" for k, v in m.counts.items())
        tab.rows.append([name, counts, m.duration_s, m.uri])
    return tab


def judge_table(it: IterationData) -> Table:
    j = it.manifests["judge"]
    n = j.counts.get("judgments", 0)
    rows = [["judgments", n], ["parsed", j.counts.get("parsed")], ["parse rate", _ratio(len(it.scores), n)],
            ["mean score", _mean(it.scores)], ["score std", _std(it.scores)], ["tie rate (prompts)", tie_rate(it)],
            ["self-agreement", it.self_agreement],
            ["share of 5s", _ratio(sum(rubric_point(s) == 5 for s in it.scores), len(it.scores))]]
    return Table(f"Iteration {it.t}: judge health", ["quantity", "value"], rows)


def score_table(it: IterationData) -> Table:
    points = [rubric_point(s) for s in it.scores]
    rows = [[k, points.count(k), _ratio(points.count(k), len(points))] for k in range(6)]
    return Table(f"Iteration {it.t}: judge score distribution", ["score", "judgments", "share"], rows)


def pair_table(it: IterationData) -> Table:
    p = it.manifests["pairs"]
    tab = Table(f"Iteration {it.t}: preference pairs", ["kind", "pairs", "chosen score", "rejected score", "skipped"])
    for kind in ("actor", "judge"):
        skipped = ", ".join(f"{k[len(kind) + 1:]} {v}" for k, v in p.counts.items()
                            if k.startswith(kind + "_") and k != f"{kind}_pairs")
        tab.rows.append([kind, p.counts.get(f"{kind}_pairs", 0), p.stats.get(f"{kind}_chosen_mean_score"),
                         p.stats.get(f"{kind}_rejected_mean_score"), skipped or "none"])
    return tab


def length_table(it: IterationData) -> Table:
    """Response lengths in characters: every response, and the chosen and rejected sides of actor pairs."""
    tab = Table(f"Iteration {it.t}: response lengths (chars)", ["responses", "n", "mean", "median"])
    for name, xs in (("all", it.response_chars), ("actor chosen", it.chosen_chars),
                     ("actor rejected", it.rejected_chars)):
        tab.rows.append([name, len(xs), _mean(xs), _median(xs)])
    return tab


def meta_table(it: IterationData) -> Table:
    m, b = it.manifests["meta_judge"], meta_bias(it)
    rows = [["calls (both orders)", m.counts.get("calls")], ["decided", m.counts.get("decided")],
            ["undecided rate", _ratio(m.counts.get("undecided"), m.counts.get("calls"))],
            ["position bias (share won by first)", b.get("position_bias")],
            ["position bias, equal scores", b.get("position_bias_equal_scores")],
            ["score bias (share won by higher score)", b.get("score_bias")],
            ["position weights w1, w2", f"{_fmt(b.get('w1'))}, {_fmt(b.get('w2'))}"]]
    return Table(f"Iteration {it.t}: meta-judge", ["quantity", "value"], rows)


BENCH_METRICS = {  # (stats key, value key, column name)
    "self": (None, "mean_score", "self-judged score"),
    "mt_bench": ("mt_bench", "score", "MT-Bench"),
    "alpaca_eval": ("alpaca_eval", "win_rate", "AlpacaEval win rate"),
    "alpaca_eval_lc": ("alpaca_eval", "lc_win_rate", "AlpacaEval LC win rate"),
    "arena_hard": ("arena_hard", "score", "Arena-Hard"),
    "judge_quality": ("judge_quality", "agreement", "judge agreement with humans"),
}


def bench_values(stats: dict) -> dict[str, tuple[float | None, str | None, str | None]]:
    """metric -> (value, judge, label) from a benchmark manifest's stats (or the iteration summary's copy of
    them); only metrics they have."""
    out = {}
    for name, (section, key, _) in BENCH_METRICS.items():
        src = stats if section is None else stats.get(section)
        if isinstance(src, dict) and key in src:
            out[name] = (src.get(key), src.get("judge"), src.get("label"))
    return out


def bench_rows(stats: dict, iteration: int | None = None) -> list[list]:
    """Rows of `benchmark_table` (model, metric, value, judge, label) from a benchmark's stats: the judged
    benchmarks' values, then IFEval's and LLMBar's, each with its interval and n."""
    model = f"M_{stats.get('model_iteration', iteration)}"
    return [[model, BENCH_METRICS[k][2], v, judge, label] for k, (v, judge, label) in bench_values(stats).items()] + \
        [[model, *row] for row in measures.bench_rows(stats)]


def _benchmarks(rep: RunReport, t: int | None) -> list[tuple[int, dict]]:
    """(model iteration, benchmark stats): every model of the run, or M_t (and M_0 beside M_1)."""
    return [(it.manifests["benchmark"].iteration, it.manifests["benchmark"].stats)
            for s, it in sorted(rep.iterations.items())
            if "benchmark" in it.manifests and (t is None or s == t or (t == 1 and s == 0))]


def benchmark_table(rep: RunReport, t: int | None = None) -> Table:
    """Benchmark results with their judge: every model of the run, or M_t (and M_0 beside M_1)."""
    tab = Table("Benchmarks" if t is None else f"Iteration {t}: benchmark",
                ["model", "metric", "value", "judge", "label"])
    for s, stats in _benchmarks(rep, t):
        tab.rows += bench_rows(stats, s)
    return tab


def llmbar_sets_table(title: str, benches: list[tuple[int, dict]]) -> Table:
    """LLMBar per set and pooled, per model: accuracy with its interval, agreement, correct in both orders."""
    tab = Table(title, ["model", "set", "accuracy", "agreement", "correct both", "n", "judge"])
    for s, stats in benches:
        tab.rows += [[f"M_{stats.get('model_iteration', s)}", *row] for row in measures.llmbar_set_rows(stats)]
    return tab


def llmbar_table(rep: RunReport, t: int | None = None) -> Table:
    return llmbar_sets_table("LLMBar per set" if t is None else f"Iteration {t}: LLMBar per set", _benchmarks(rep, t))


def drift_stats_table(title: str, drift: dict, gate: dict | None = None) -> Table:
    """The drift figures: each judge's scores and preferences side by side, own minus reference beside them."""
    return Table(title, measures.drift_columns(drift), measures.drift_rows(drift, gate))


def drift_table(it: IterationData) -> Table:
    return drift_stats_table(f"Iteration {it.t}: drift", it.manifests["benchmark"].stats["drift"], it.drift_gate)


MEASURE_COLUMNS = [*measures.IFEVAL.values(), "LLMBar accuracy", "gap (own - reference)", "self-preference",
                   "reference preference", "self-preference excess", "drift gate"]


def measures_table(rep: RunReport) -> Table:
    """One row per model M_t: the judge-free figures the report's curves show (`plots.judge_free`, `plots.drift`)."""
    tab = Table("Judge-free measures per model", ["model", *MEASURE_COLUMNS])
    for t, it in sorted(rep.iterations.items()):
        stats = it.manifests["benchmark"].stats if "benchmark" in it.manifests else {}
        if not any(k in stats for k in ("ifeval", "llmbar", "drift")):
            continue
        ifeval, llmbar, d = stats.get("ifeval") or {}, (stats.get("llmbar") or {}).get("pooled") or {}, \
            stats.get("drift") or {}
        tab.rows.append([f"M_{t}", *(measures.interval((ifeval.get("ci95") or {}).get(k), ifeval.get(k))
                                     for k in measures.IFEVAL),
                         measures.interval(llmbar.get("accuracy_ci95"), llmbar.get("accuracy")), d.get("gap"),
                         d.get("self_preference"), d.get("ref_preference"), d.get("self_preference_excess"),
                         measures.gate_text(it.drift_gate) if it.drift_gate else None])
    return tab


def iteration_tables(it: IterationData, rep: RunReport | None = None) -> list[Table]:
    tabs = [stage_table(it)]
    if "judge" in it.manifests:
        tabs += [judge_table(it), score_table(it)]
    if "generate" in it.manifests:
        tabs.append(length_table(it))
    if "pairs" in it.manifests:
        tabs.append(pair_table(it))
    if "meta_judge" in it.manifests:
        tabs.append(meta_table(it))
    if rep is not None and "benchmark" in it.manifests:
        tabs.append(benchmark_table(rep, it.t))
        if "llmbar" in it.manifests["benchmark"].stats:
            tabs.append(llmbar_table(rep, it.t))
    if "benchmark" in it.manifests and "drift" in it.manifests["benchmark"].stats:
        tabs.append(drift_table(it))
    return tabs


def overview_table(rep: RunReport) -> Table:
    """One row per training iteration: the numbers the plots show."""
    tab = Table("Iterations", ["iteration", "responses", "mean chars", "parse rate", "mean score", "tie rate",
                               "self-agreement", "actor pairs", "judge pairs", "chosen chars", "rejected chars",
                               "position bias", "score bias"])
    for t, it in sorted(rep.iterations.items()):
        if t == 0 or "judge" not in it.manifests:
            continue
        p = it.manifests.get("pairs")
        b = meta_bias(it)
        tab.rows.append([t, len(it.response_chars), _mean(it.response_chars),
                         _ratio(len(it.scores), it.manifests["judge"].counts.get("judgments")), _mean(it.scores),
                         tie_rate(it), it.self_agreement, p.counts.get("actor_pairs") if p else None,
                         p.counts.get("judge_pairs") if p else None, _mean(it.chosen_chars),
                         _mean(it.rejected_chars), b.get("position_bias"), b.get("score_bias")])
    return tab


# ------------------------------------------------------------------------------------------------ rendering


def table_markdown(tab: Table) -> str:
    def cell(v) -> str:
        return "" if v is None else str(_fmt(v)).replace("|", "\\|").replace("\n", " ")

    lines = [f"### {tab.title}", "", "| " + " | ".join(tab.columns) + " |", "|" + "---|" * len(tab.columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in tab.rows]
    return "\n".join(lines) + "\n"


def table_html(tab: Table) -> str:
    from html import escape

    def cell(v) -> str:
        return "" if v is None else escape(str(_fmt(v)))

    head = "".join(f"<th>{escape(c)}</th>" for c in tab.columns)
    body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>" for row in tab.rows)
    return f"<h3>{escape(tab.title)}</h3>\n<table><tr>{head}</tr>{body}</table>\n"
