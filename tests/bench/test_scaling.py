"""bench/scaling.py without the model: the prompts, the sizes, the figures and the plot. The section itself needs
the model for an hour; what it computes from its timings is checked here on numbers worked out by hand (the
workload's requests: test_workload.py)."""

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def sc(bench_file):
    return bench_file("scaling")


@pytest.mark.parametrize("n", [256, 512])
def test_prompts_are_distinct_deterministic_and_no_counter_copies(sc, n):
    prompts = sc.scaling_prompts(n)
    assert len(prompts) == n and len(set(prompts)) == n
    assert prompts == sc.scaling_prompts(n)
    assert sc.scaling_prompts(16) == prompts[:16]  # a smaller size is the start of a bigger one
    # No prompt is another with something (a counter) appended, and none is left once trailing digits go.
    assert not [(a, b) for a in prompts for b in prompts if a != b and b.startswith(a)]
    stripped = {re.sub(r"[\s#(\-_:]*\d+\W*$", "", p) for p in prompts}
    assert len(stripped) == n
    # After the smoke set, consecutive prompts come from different templates (their first two words differ).
    starts = [" ".join(p.split()[:2]) for p in prompts[24:]]
    assert all(a != b for a, b in zip(starts, starts[1:]))


def test_the_smoke_prompts_come_first(sc):
    assert sc.scaling_prompts(3)[0] == "Explain why the sky looks blue during the day."
    assert sc.scaling_prompts(25)[24] == sc.templated(0)


def test_more_prompts_than_can_be_made_is_a_clear_error(sc):
    assert sc.MAX_PROMPTS == 24 + 16 * 32
    assert len(sc.scaling_prompts(sc.MAX_PROMPTS)) == 536
    with pytest.raises(ValueError, match="at most 536 distinct prompts"):
        sc.scaling_prompts(537)


def test_the_sizes_from_the_environment(sc):
    assert sc.selected_sizes({}) == ((16, 64, 256), (16, 64))
    env = {"METAREWARD_SCALING_SIZES": "64, 16", "METAREWARD_SCALING_DOUBLED": ""}
    assert sc.selected_sizes(env) == ((16, 64), ())
    assert sc.selected_sizes({"METAREWARD_SCALING_SIZES": "2"}) == ((2,), (16, 64))
    for bad, why in (("16,x", "integers"), ("0", "1 to 536"), ("600", "1 to 536")):
        with pytest.raises(ValueError, match=why):
            sc.selected_sizes({"METAREWARD_SCALING_DOUBLED": bad})


def _run(prompts, k, n, ms, tokens_per_row=(60, 40, 50)):
    """A run whose stages cost ``ms`` milliseconds a token, at ``tokens_per_row`` tokens a row."""
    stages = {}
    for (name, rows), per, cost in zip(_requests(prompts, k, n).items(), tokens_per_row, ms):
        tokens = rows * per
        stages[name] = {"requests": rows, "tokens": tokens, "seconds": round(tokens * cost / 1000, 2),
                        "tok_per_s": round(1000 / cost, 1), "ms_per_token": cost}
    return {"prompts": prompts, "k": k, "n": n, "stages": stages,
            "total_seconds": round(sum(s["seconds"] for s in stages.values()), 2),
            "total_tokens": sum(s["tokens"] for s in stages.values())}


def _requests(prompts, k, n):
    return {"generate": prompts * k, "judge": prompts * k * n, "meta_judge": prompts * n * (n - 1)}


def test_a_run_totals_its_stages(sc):
    stages = {"generate": sc.stage_figures(64, 3000, 10.0), "judge": sc.stage_figures(192, 4000, 8.0),
              "meta_judge": sc.stage_figures(96, 2000, 10.0)}
    assert stages["judge"] == {"requests": 192, "tokens": 4000, "seconds": 8.0, "tok_per_s": 500.0,
                               "ms_per_token": 2.0}
    r = sc.run_figures(16, 4, 3, stages)
    assert (r["total_seconds"], r["total_tokens"]) == (28.0, 9000)


def test_the_cost_trend_over_the_k4_n3_series(sc):
    runs = [_run(16, 4, 3, (4.0, 2.0, 5.0)), _run(64, 4, 3, (3.5, 2.0, 5.5)), _run(256, 4, 3, (3.0, 2.1, 6.0)),
            _run(64, 8, 6, (100.0, 100.0, 100.0))]  # the doubled series does not count
    t = sc.cost_trend(runs)
    # generate 4.0 -> 3.0 ms: 0.75, fell; judge 2.0 -> 2.1: 1.05, within 10%; meta 5.0 -> 6.0: 1.2, rose
    assert t["generate"] == {"smallest_prompts": 16, "largest_prompts": 256, "ms_per_token_smallest": 4.0,
                             "ms_per_token_largest": 3.0, "ratio": 0.75, "flat_or_falling": True}
    assert (t["judge"]["ratio"], t["judge"]["flat_or_falling"]) == (1.05, True)
    assert (t["meta_judge"]["ratio"], t["meta_judge"]["flat_or_falling"]) == (1.2, False)
    assert sc.cost_trend([_run(16, 8, 6, (1.0, 1.0, 1.0))]) == {}  # no K=4, N=3 run
    assert sc.cost_trend([_run(2, 4, 3, (1.0, 1.0, 1.0))]) == {}  # one size: no trend


def test_estimate_seconds_from_the_largest_run(sc):
    results = {"runs": [_run(16, 4, 3, (9.0, 9.0, 9.0)), _run(256, 4, 3, (2.0, 1.5, 4.0))]}
    # the 256-prompt run: 60, 40, 50 tokens a row at 2.0, 1.5, 4.0 ms a token.
    # 1024 prompts, K=4, N=3: generate 4096 rows x 60 = 245,760 tokens x 2 ms = 491.52 s; judge 12,288 rows x 40
    # = 491,520 tokens x 1.5 ms = 737.28 s; meta-judge 1024 x 6 = 6144 rows x 50 = 307,200 tokens x 4 ms = 1228.8 s
    assert sc.estimate_seconds(results, 1024, 4, 3) == {"generate": 491.5, "judge": 737.3, "meta_judge": 1228.8,
                                                        "total": 2457.6}
    # 512 prompts, K=8, N=6: generate 4096 rows (491.5 s); judge 24,576 rows x 40 x 1.5 ms = 1474.56 s; meta-judge
    # 512 x 30 = 15,360 rows x 50 x 4 ms = 3072 s
    assert sc.estimate_seconds(results, 512, 8, 6) == {"generate": 491.5, "judge": 1474.6, "meta_judge": 3072.0,
                                                       "total": 5038.1}


def _section():
    return {"dtype": "bfloat16", "batch_size": 128, "commit": "abc1234", "sizes": [16, 64], "doubled": [16],
            "runs": [_run(16, 4, 3, (4.0, 2.0, 5.0)), _run(64, 4, 3, (3.0, 2.0, 5.0)),
                     _run(16, 8, 6, (3.5, 1.8, 4.5))]}


def test_the_table_lines_and_bench_table(bench_file, sc):
    section = {**_section(), "cost_trend": sc.cost_trend(_section()["runs"])}
    text = "\n".join(sc.table_lines(section))
    assert "dtype bfloat16, 128 rows a batch" in text
    assert "generate 4.0 -> 3.0 (flat or falling)" in text
    # 64 prompts x 4 = 256 generate rows x 60 tokens x 3 ms = 46.08 s: the 64-prompt row
    assert re.search(r"^\s+64\s+4\s+3\s+46\.08 /\s+3\.0", text, re.M)
    assert "extrapolated to 256 prompts, K=4, N=3" in text
    b = bench_file("bench")
    machine = {"cpu": "x", "cores": 2, "load_avg_1m": 0.5, "flags": {"avx2": True}}
    assert "extrapolated to 256 prompts" in b.table({"machine": machine, "scaling": section})
    assert "scaling: FAILED: boom" in b.table({"machine": machine, "scaling": {"error": "boom"}})
    assert "\n\n\n" not in b.table({"machine": machine, "scaling": section})  # one blank line between parts


def test_plot_writes_a_png(sc, tmp_path):
    results = {**_section(), "machine": {"cpu": "Test CPU", "cores": 2, "flags": {"avx2": True}}}
    assert "Test CPU (2 cores; avx2)" in sc._title(results) and "commit abc1234" in sc._title(results)
    path = tmp_path / "scaling.png"
    sc.plot(results, path)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000


def test_a_stopped_run_keeps_the_sizes_it_measured(sc, tmp_path):
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"engine": {"dtype": "float32"}}))
    run = {"prompts": 16, "k": 4, "n": 3, "total_seconds": 3.0, "total_tokens": 300,
           "stages": {s: {"requests": 10, "tokens": 100, "seconds": 1.0, "tok_per_s": 100.0, "ms_per_token": 10.0}
                      for s in sc.STAGES}}
    sc.save_partial({"dtype": "float32", "runs": [run], "partial": True}, path)
    saved = json.loads(path.read_text())
    assert saved["engine"] == {"dtype": "float32"}  # the other sections are kept
    assert saved["scaling"]["partial"] is True and saved["scaling"]["runs"] == [run]
    assert saved["scaling"]["cost_trend"] == {}  # one size: no trend
