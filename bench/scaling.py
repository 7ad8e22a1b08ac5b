"""The scaling section of `make bench` (``bench.py scaling``, ``make bench-scaling``): how the cost of the engine
stages grows with the size of a run, so a user can read off what a bigger run will cost.

Why a section of its own: the engine section measures one size (the smoke recipe's 16 prompts, K=4, N=3) against
peers; a run of thousands of prompts needs to know whether the cost per generated token stays flat as batches
fill (it should, or fall: more rows share a decode step's weight reads). Only our engine runs here; the peers are
the engine section's job.

The workload at each size is the engine section's (bench/workload.py: the requests, their sampling and their
timing), only bigger. One engine serves every size (its load is not timed); each stage call is timed from texts to
completions (`workload.timed_generate`).

Sizes: SIZES prompts at K=4, N=3, and the "doubled" series K=8, N=6 at DOUBLED prompts only: 256 prompts doubled
(2,048 responses, 12,288 judge rows, 7,680 meta-judge rows) would take hours on a 2-core CPU. The whole default
section takes over an hour on such a CPU, so a bare `make bench` does not run it. On a slow host run a subset::

    METAREWARD_SCALING_SIZES=16,64 METAREWARD_SCALING_DOUBLED= make bench-scaling   # "" = none of that series

Results: the ``scaling`` key of bench/results.json (its keys: bench/README.md, "results.json"). ``cost_trend``
calls a stage's cost ``flat_or_falling`` when the largest size's ms per token is at most TOLERANCE (10%) above the
smallest's: a shared machine's speed drifts over minutes (bench/README.md), so a strict "never higher" would fail
on noise; it is empty when the K=4, N=3 series ran at fewer than two sizes.

`plot` draws bench/scaling.png from them; `estimate_seconds` extrapolates a bigger run's seconds per stage.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:  # bench/ is no package: workload.py beside this file is imported as a module
    sys.path.insert(0, str(HERE))

import workload  # noqa: E402
from workload import (K, MAX_TOKENS, N_JUDGE, STAGES, answered, judge_texts, meta_judge_texts,  # noqa: E402
                      requests, smoke_prompts)

SIZES, DOUBLED = (16, 64, 256), (16, 64)
DOUBLED_K, DOUBLED_N = 2 * K, 2 * N_JUDGE
TOLERANCE = 0.10  # ms per token may rise this much from the smallest to the largest size and count as flat
SIZES_ENV, DOUBLED_ENV = "METAREWARD_SCALING_SIZES", "METAREWARD_SCALING_DOUBLED"

# Instruction templates x topics: distinct prompts of the smoke set's kind and length. Each template starts
# differently, so no two templates share more than a word or two of prefix (the engine shares common prefixes
# between prompts; copies of one prompt would flatter it).
TEMPLATES = (
    "Explain {topic} to someone who has never heard of it.",
    "Write a short paragraph about {topic} for a school newsletter.",
    "What are three common misconceptions about {topic}?",
    "Give me a simple analogy that explains {topic}.",
    "Summarize the most important facts about {topic} in five bullet points.",
    "Compose a haiku inspired by {topic}.",
    "How would you teach a ten-year-old about {topic}?",
    "Which questions should a beginner ask when reading about {topic}?",
    "Describe the history of {topic} in a few sentences.",
    "Suggest a weekend project that would help me understand {topic}.",
    "Draft a friendly social media post that makes people curious about {topic}.",
    "Compare {topic} with something from everyday life.",
    "If I read one article about {topic}, what should it cover?",
    "Create a short dialogue between two friends discussing {topic}.",
    "Why do people find {topic} interesting? Give two reasons.",
    "Prepare a quiz of three questions about {topic}, with answers.",
)
TOPICS = (
    "the water cycle", "compound interest", "the French Revolution", "machine learning", "sourdough bread",
    "the immune system", "public transport", "volcanoes", "the stock market", "recycling", "sleep",
    "the Roman Empire", "electric cars", "honeybees", "climate change", "the internet", "chess", "meditation",
    "the moon landing", "coral reefs", "inflation", "3D printing", "the human heart", "jazz music",
    "renewable energy", "earthquakes", "credit scores", "the printing press", "gardening", "plate tectonics",
    "remote work", "the Olympic Games",
)


def templated(i: int) -> str:
    """The i-th template x topic prompt. Diagonal order: template i % T, topic (i // T + i % T) % C, a bijection
    on range(T * C) (for each template the topics run through all C), so consecutive prompts differ in template
    and in topic.

    >>> templated(0)
    'Explain the water cycle to someone who has never heard of it.'
    >>> templated(1)  # template 1, topic 1
    'Write a short paragraph about compound interest for a school newsletter.'
    >>> templated(16)  # template 0 again, topic 1
    'Explain compound interest to someone who has never heard of it.'
    """
    t, row = i % len(TEMPLATES), i // len(TEMPLATES)
    return TEMPLATES[t].format(topic=TOPICS[(row + t) % len(TOPICS)])


MAX_PROMPTS = 24 + len(TEMPLATES) * len(TOPICS)  # the smoke set's 24, then 16 x 32 = 512 templated: 536


def scaling_prompts(n: int) -> list[str]:
    """n distinct instruction prompts, the same every time: the shipped smoke prompts first (the engine section's
    16 among them), then `templated` ones. No downloads: the bench runs offline."""
    if n > MAX_PROMPTS:
        raise ValueError(f"scaling_prompts: at most {MAX_PROMPTS} distinct prompts can be made, asked for {n}")
    smoke = smoke_prompts()
    out = smoke[:n] + [templated(i) for i in range(max(0, n - len(smoke)))]
    if len(set(out)) != len(out):  # a template x topic that reads like a smoke prompt would flatter the engine
        raise ValueError("scaling_prompts: two prompts are the same")
    return out


def parse_sizes(value: str | None, default: tuple[int, ...]) -> tuple[int, ...]:
    """Prompt counts from an environment variable: unset -> the default; "" -> none; "16, 64" -> (16, 64),
    sorted and without repeats.

    >>> parse_sizes(None, (16, 64)), parse_sizes("", (16,)), parse_sizes("64, 16,16", ())
    ((16, 64), (), (16, 64))
    """
    if value is None:
        return default
    try:
        sizes = sorted({int(v) for v in value.split(",") if v.strip()})
    except ValueError:
        raise ValueError(f"prompt counts must be integers separated by commas, got {value!r}") from None
    bad = [s for s in sizes if not 1 <= s <= MAX_PROMPTS]
    if bad:
        raise ValueError(f"prompt counts must be 1 to {MAX_PROMPTS}, got {bad}")
    return tuple(sizes)


def selected_sizes(environ=os.environ) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(sizes at K, N; sizes at the doubled K, N), from METAREWARD_SCALING_SIZES and _DOUBLED or the defaults."""
    return parse_sizes(environ.get(SIZES_ENV), SIZES), parse_sizes(environ.get(DOUBLED_ENV), DOUBLED)


# ------------------------------------------------------------------------------------------------ figures


def stage_figures(rows: int, tokens: int, seconds: float) -> dict:
    """One stage call's figures. ms_per_token is the cost a user multiplies by a bigger run's tokens.

    >>> stage_figures(100, 500, 2.0)
    {'requests': 100, 'tokens': 500, 'seconds': 2.0, 'tok_per_s': 250.0, 'ms_per_token': 4.0}
    """
    return {"requests": rows, "tokens": tokens, "seconds": round(seconds, 2),
            "tok_per_s": round(tokens / seconds, 1) if seconds else None,
            "ms_per_token": round(1000 * seconds / tokens, 3) if tokens else None}


def run_figures(prompts: int, k: int, n: int, stages: dict) -> dict:
    return {"prompts": prompts, "k": k, "n": n, "stages": stages,
            "total_seconds": round(sum(s["seconds"] for s in stages.values()), 2),
            "total_tokens": sum(s["tokens"] for s in stages.values())}


def cost_trend(runs: list[dict], k: int = K, n: int = N_JUDGE, tolerance: float = TOLERANCE) -> dict:
    """Per stage, ms per token at the smallest and the largest size of the (k, n) series, and whether it stayed
    within ``tolerance`` of flat or fell. Empty when that series ran at fewer than two sizes: one size says
    nothing about a trend, and "flat" there would read as a finding."""
    series = sorted((r for r in runs if (r["k"], r["n"]) == (k, n)), key=lambda r: r["prompts"])
    if len(series) < 2:
        return {}
    small, large = series[0], series[-1]
    out = {}
    for name in STAGES:
        a, b = small["stages"][name]["ms_per_token"], large["stages"][name]["ms_per_token"]
        out[name] = {"smallest_prompts": small["prompts"], "largest_prompts": large["prompts"],
                     "ms_per_token_smallest": a, "ms_per_token_largest": b, "ratio": round(b / a, 3),
                     "flat_or_falling": b <= a * (1 + tolerance)}
    return out


def estimate_seconds(results: dict, prompts: int, k: int, n: int) -> dict[str, float]:
    """Seconds per stage (and ``total``) a run of ``prompts`` prompts at K=k, N=n would take: the largest measured
    run's ms per token times the tokens the bigger run would generate (that run's tokens per row times the bigger
    run's rows, `requests`). It assumes the cost per token stays flat beyond the sizes measured (``cost_trend``
    says whether it did within them) and responses and judgments of the same length."""
    big = max(results["runs"], key=lambda r: (r["prompts"], r["total_tokens"]))
    rows = requests(prompts, k, n)
    out = {}
    for name in STAGES:
        s = big["stages"][name]
        out[name] = round(s["ms_per_token"] / 1000 * s["tokens"] / s["requests"] * rows[name], 1)
    out["total"] = round(sum(out.values()), 1)
    return out


# --------------------------------------------------------------------------------------------------- run


def _timed_stage(engine, texts: list[str], n: int, max_new: int) -> tuple[list[list], dict]:
    outs, tokens, secs = workload.timed_generate(engine, texts, n, workload.sampling(max_new))
    return outs, stage_figures(len(texts) * n, tokens, secs)


def run_size(engine, prompts: list[str], k: int, n: int) -> dict:
    """The three stages at one size, each line printed as it ends (a full section runs for over an hour)."""
    stages = {}

    def stage(name: str, texts: list[str], per: int) -> list[list]:
        outs, stages[name] = _timed_stage(engine, texts, per, MAX_TOKENS[name])
        print(json.dumps({"prompts": len(prompts), "k": k, "n": n, "stage": name, **stages[name]}), flush=True)
        return outs

    answers = answered(prompts, stage("generate", prompts, k))
    judged = stage("judge", judge_texts(answers), n)
    stage("meta_judge", meta_judge_texts(answers, judged, k), 1)
    return run_figures(len(prompts), k, n, stages)


def bench_scaling() -> dict:
    from metareward.engines.models import embedded_model_path
    from metareward.hardware import inference_dtype
    from metareward.engines.transformers_engine import TransformersEngine

    sizes, doubled = selected_sizes()
    recipe = workload.recipe()
    batch, dtype = recipe.engine.batch_size, inference_dtype(recipe.engine.dtype, "cpu")
    engine = TransformersEngine(embedded_model_path(), dtype=dtype, batch_size=batch)
    # An untimed first call, on a prompt outside the workload: one-off set-up costs (allocations, kernels' first
    # use) would otherwise land on the smallest size and make the cost per token look like it falls.
    _timed_stage(engine, ["Say hello."], 2, 8)
    section = {"model": "SmolLM2-135M-Instruct (embedded)", "dtype": dtype, "batch_size": batch,
               "sizes": list(sizes), "doubled": list(doubled), "k": K, "n": N_JUDGE, "doubled_k": DOUBLED_K,
               "doubled_n": DOUBLED_N, "max_new_tokens": MAX_TOKENS, "runs": [], "partial": True}
    for p, k, n in [(p, K, N_JUDGE) for p in sizes] + [(p, DOUBLED_K, DOUBLED_N) for p in doubled]:
        section["runs"].append(run_size(engine, scaling_prompts(p), k, n))
        save_partial(section, workload.RESULTS)
    engine.close()
    section.pop("partial")
    return {**section, "cost_trend": cost_trend(section["runs"])}


def save_partial(section: dict, path: Path) -> None:
    """The sizes done so far into ``path``'s ``scaling`` key, marked ``partial``, after each size: the section runs
    for over an hour, and a run stopped part-way keeps what it measured (bench.py writes the whole section, without
    the mark, when it ends)."""
    results = json.loads(path.read_text()) if path.is_file() else {}
    results["scaling"] = {**section, "cost_trend": cost_trend(section["runs"])}
    tmp = path.with_suffix(".partial")
    tmp.write_text(json.dumps(results, indent=2) + "\n")
    tmp.replace(path)


# ------------------------------------------------------------------------------------------ table, plot


def table_lines(section: dict) -> list[str]:
    """bench.py's table: per run, seconds and ms per token per stage; the trend; one extrapolation."""
    lines = [f"scaling (ours only; dtype {section['dtype']}, {section['batch_size']} rows a batch): seconds / ms per "
             f"generated token"]
    lines.append(f"{'prompts':>8}{'K':>4}{'N':>4}" + "".join(f"{s:>22}" for s in STAGES) + f"{'total s':>10}")
    for r in section["runs"]:
        cells = "".join(f"{r['stages'][s]['seconds']:>12} / {r['stages'][s]['ms_per_token']:>7}" for s in STAGES)
        lines.append(f"{r['prompts']:>8}{r['k']:>4}{r['n']:>4}{cells}{r['total_seconds']:>10}")
    trend = section.get("cost_trend") or {}
    if trend:
        lines.append("ms/token, smallest -> largest size: " + "; ".join(
            f"{s} {t['ms_per_token_smallest']} -> {t['ms_per_token_largest']} "
            f"({'flat or falling' if t['flat_or_falling'] else 'RISING'})" for s, t in trend.items()))
    if not section["runs"]:
        return lines + ["(no size ran)"]
    big = max(r["prompts"] for r in section["runs"])
    est = estimate_seconds(section, 4 * big, K, N_JUDGE)
    lines.append(f"extrapolated to {4 * big} prompts, K={K}, N={N_JUDGE}: " +
                 ", ".join(f"{s} {v} s" for s, v in est.items()))
    return lines


def _title(results: dict) -> str:
    m = results.get("machine") or {}
    flags = ", ".join(f for f, on in (m.get("flags") or {}).items() if on)
    where = f"{m['cpu']} ({m.get('cores', '?')} cores; {flags or 'no avx2/bf16 flags'})" if m.get("cpu") else ""
    rest = f"{results.get('dtype', '?')}, commit {results.get('commit', '?')}"
    return f"engine cost against run size: {where}; {rest}" if where else f"engine cost against run size: {rest}"


def plot(results: dict, path: Path | str) -> None:
    """bench/scaling.png: left, seconds per stage and in total against the number of prompts (log-log: a slope
    of 1 is linear growth); right, ms per generated token per stage, the figure to extrapolate from (flat lines
    are what a bigger run should see). K=4/N=3 solid, the doubled K/N dashed with hollow markers (a series of one
    size is a lone point)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import LogFormatter, NullLocator

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5.2))
    colors = dict(zip((*STAGES, "total"), ("tab:blue", "tab:orange", "tab:green", "black")))
    series = sorted({(r["k"], r["n"]) for r in results["runs"]})
    for k, n in series:
        runs = sorted((r for r in results["runs"] if (r["k"], r["n"]) == (k, n)), key=lambda r: r["prompts"])
        base = (k, n) == (K, N_JUDGE)
        style = "-" if base else "--"
        x = [r["prompts"] for r in runs]
        for name in STAGES:
            label = f"{name}, K={k} N={n}"
            kw = {"marker": "o", "color": colors[name], "label": label, "mfc": None if base else "none"}
            left.plot(x, [r["stages"][name]["seconds"] for r in runs], style, **kw)
            right.plot(x, [r["stages"][name]["ms_per_token"] for r in runs], style, **kw)
        left.plot(x, [r["total_seconds"] for r in runs], style, marker="s", color=colors["total"],
                  label=f"total, K={k} N={n}", mfc=None if base else "none")
    left.set(xscale="log", yscale="log", xlabel="prompts", ylabel="seconds", title="seconds per stage")
    right.set(xscale="log", xlabel="prompts", ylabel="ms per generated token", title="cost per generated token")
    right.set_ylim(bottom=0)
    # plain seconds (30, 40, 60, 100), not 3 x 10^1: the figure is read by people pricing a run
    left.yaxis.set_major_formatter(LogFormatter())
    left.yaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False))
    for ax in (left, right):
        ticks = sorted({r["prompts"] for r in results["runs"]})
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.xaxis.set_minor_locator(NullLocator())  # only the sizes measured are labelled
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(_title(results), fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
