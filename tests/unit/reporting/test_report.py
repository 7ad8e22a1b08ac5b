"""The run report on a hand-written run store: every number below is worked out by hand from the records.

Iteration 1 (2 prompts, 2 responses each, 2 judgments each):

    response  text        judgments (score -> rubric point)
    p1-r0     "aaaa" (4)  4.0 -> 4, 4.4 -> 4
    p1-r1     "bb"   (2)  2.0 -> 2, 2.6 -> 3
    p2-r0     "cccccc"(6) 3.0 -> 3, 3.0 -> 3
    p2-r1     "d"    (1)  3.0 -> 3, unparsed

    valid scores 7 of 8: parse rate 0.875, mean 22.0 / 7 = 3.142857, points {2: 1, 3: 4, 4: 2}
    self-agreement: p1-r0 agrees, p1-r1 not, p2-r0 agrees, p2-r1 has one score -> 2 / 3
    lengths: all (4 + 2 + 6 + 1) / 4 = 3.25, median (2 + 4) / 2 = 3; actor pair p1: chosen 4, rejected 2
    tie rate: the pairs stage skipped p2 as a tie -> 1 / 2 prompts
"""

import base64
import re

from pathlib import Path

import pytest

from metareward.reporting import report
from metareward.runstore import store
from metareward.runstore.layout import RunLayout
from metareward.records import Judgment, Manifest, PreferencePair, Response

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _stage(run, t, stage, counts=None, stats=None, **rows):
    folder = store.join(run, f"iter_{t}", stage)
    files, digests = {}, {}
    for name, records in rows.items():
        files[name] = store.join(folder, f"{name}.jsonl")
        digests[name] = store.write_jsonl(files[name], records)
    store.write_manifest(Manifest(stage=stage, iteration=t, run="hand", key="k", uri=folder, files=files,
                                  digests=digests, counts=counts or {}, stats=stats or {}, duration_s=1.5))


def _judgment(rid, k, score):
    return Judgment(id=f"{rid}-j{k}", response_id=rid, prompt_id=rid.split("-")[0], text="x", score=score)


@pytest.fixture
def run(tmp_path):
    run = str(tmp_path / "hand")
    store.write_json(store.join(run, "config.json"), {"run": {"name": "hand"}})
    texts = {"p1-r0": "aaaa", "p1-r1": "bb", "p2-r0": "cccccc", "p2-r1": "d"}
    scores = {"p1-r0": [4.0, 4.4], "p1-r1": [2.0, 2.6], "p2-r0": [3.0, 3.0], "p2-r1": [3.0, None]}
    _stage(run, 1, "generate", {"prompts": 2, "responses": 4},
           responses=[Response(id=i, prompt_id=i[:2], prompt="q", text=x) for i, x in texts.items()])
    _stage(run, 1, "judge", {"judgments": 8, "parsed": 7, "unparsed": 1},
           judgments=[_judgment(rid, k, s) for rid, ss in scores.items() for k, s in enumerate(ss)])
    _stage(run, 1, "meta_judge", {"calls": 4, "decided": 3, "undecided": 1})
    pairs = [PreferencePair(kind="actor", prompt_id="p1", prompt="q", chosen="aaaa", rejected="bb", chosen_id="p1-r0",
                            rejected_id="p1-r1", chosen_score=4.2, rejected_score=2.3),
             PreferencePair(kind="judge", prompt_id="p1", prompt="q", chosen="x" * 10, rejected="y", chosen_id="a",
                            rejected_id="b", chosen_score=4.0, rejected_score=4.4)]
    _stage(run, 1, "pairs", {"actor_pairs": 1, "judge_pairs": 1, "pairs": 2, "actor_tie": 1},
           {"actor_chosen_mean_score": 4.2, "actor_rejected_mean_score": 2.3,
            "meta_judge": {"position_bias": 0.75, "score_bias": 0.6, "w1": 0.4, "w2": 0.6}}, pairs=pairs)
    for t, score in ((0, 2.5), (1, 3.0)):
        _stage(run, t, "benchmark", {"eval_prompts": 2},
               {"model_iteration": t, "mean_score": score, "judge": f"self (M_{t})",
                "mt_bench": {"score": 4.0 + t, "judge": "transformers:seed#abc", "label": "not comparable"}})
    return run


def _table(tables, title_end):
    [tab] = [t for t in tables if t.title.endswith(title_end)]
    return tab


def test_iteration_tables_match_the_records(run):
    rep = report.load_run(run)
    assert sorted(rep.iterations) == [0, 1]
    tabs = report.iteration_tables(rep.iterations[1], rep)
    judge = dict(_table(tabs, "judge health").rows)
    assert judge["judgments"] == 8 and judge["parse rate"] == 0.875
    assert judge["mean score"] == pytest.approx(22.0 / 7)
    assert judge["tie rate (prompts)"] == 0.5 and judge["self-agreement"] == pytest.approx(2 / 3)
    assert judge["share of 5s"] == 0
    dist = {row[0]: row[1] for row in _table(tabs, "score distribution").rows}
    assert dist == {0: 0, 1: 0, 2: 1, 3: 4, 4: 2, 5: 0}
    lengths = {row[0]: row[1:] for row in _table(tabs, "lengths (chars)").rows}
    assert lengths == {"all": [4, 3.25, 3.0], "actor chosen": [1, 4, 4.0], "actor rejected": [1, 2, 2.0]}
    pairs = {row[0]: row[1:] for row in _table(tabs, "preference pairs").rows}
    assert pairs["actor"] == [1, 4.2, 2.3, "tie 1"] and pairs["judge"][0] == 1
    meta = dict(_table(tabs, "meta-judge").rows)
    assert meta["undecided rate"] == 0.25 and meta["position bias (share won by first)"] == 0.75
    assert meta["score bias (share won by higher score)"] == 0.6
    bench = _table(tabs, "benchmark").rows  # M_1 with M_0 beside it, each naming its judge
    assert ["M_0", "self-judged score", 2.5, "self (M_0)", None] in bench
    assert ["M_1", "MT-Bench", 5.0, "transformers:seed#abc", "not comparable"] in bench


def test_overview_row(run):
    [row] = report.load_run(run).run_tables()[0].as_dicts()
    assert row["iteration"] == 1 and row["mean chars"] == 3.25 and row["mean score"] == round(22 / 7, 4)
    assert row["chosen chars"] == 4 and row["rejected chars"] == 2 and row["position bias"] == 0.75


def test_write_report_html_embeds_real_pngs(run):
    import io

    import matplotlib.image

    out = report.write_report(run)
    assert set(out) >= {"report.html", "report.md", "judge_scores.png", "lengths.png", "meta_bias.png",
                        "judge_free.png", "drift.png"}
    html = store.read_text(out["report.html"])
    embedded = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", html)
    assert len(embedded) == 7
    for b64 in embedded:
        data = base64.b64decode(b64)
        assert data.startswith(PNG_MAGIC)
        h, w, _ = matplotlib.image.imread(io.BytesIO(data)).shape
        assert h > 200 and w > 300
    with store.fs_for(out["judge_scores.png"]).open(out["judge_scores.png"], "rb") as f:
        assert f.read() == base64.b64decode(embedded[0])
    assert "<td>0.875</td>" in html and "![lengths.png](lengths.png)" in store.read_text(out["report.md"])


def test_plots_draw_the_runs_data(run):
    """The score density is the iteration's scores: other scores give another picture; none gives 'no data'."""
    from metareward.reporting import plots

    rep = report.load_run(run)
    first = plots.judge_scores(rep)
    rep.iterations[1].scores = [5.0] * 7
    assert plots.judge_scores(rep) != first
    rep.iterations[1].scores = []
    empty = plots.judge_scores(rep)
    rep.iterations[1].scores = [5.0] * 7
    assert empty != plots.judge_scores(rep)


def test_iteration_markdown_links_the_store(run):
    rep = report.load_run(run)
    md = report.iteration_markdown(rep, 1, {"report": f"{run}/report/report.html"})
    assert md.startswith("# hand: iteration 1")
    assert "| parse rate | 0.875 |" in md and f"`{run}/report/report.html`" in md


def test_missing_run_is_one_line(tmp_path):
    with pytest.raises(store.StoreError, match="no such run folder"):
        report.load_run(str(tmp_path / "ghost"))


def test_a_folder_without_a_run_gets_no_report(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(store.StoreError, match=r"empty/config.json: no such run"):
        report.write_report(str(tmp_path / "empty"))
    assert list((tmp_path / "empty").iterdir()) == []


def test_a_damaged_stage_is_refused_not_reported(run):
    """A file missing from the run (or altered) is never drawn from, and the line names the stage and the file."""
    judgments = Path(run, "iter_1", "judge", "judgments.jsonl")
    judgments.write_text(judgments.read_text().replace('"score": 4.4', '"score": 0.4'))
    with pytest.raises(store.StoreError, match=rf"^judge iter 1: damaged: {judgments}: content does not match "):
        report.write_report(run)
    Path(run, "iter_1", "generate", "responses.jsonl").unlink()
    with pytest.raises(store.StoreError, match=r"^generate iter 1: damaged: .*/responses.jsonl: missing"):
        report.load_run(run)
    assert not Path(run, "report").exists()


def test_report_command_writes_into_the_run(run):
    from typer.testing import CliRunner

    from metareward.cli import app

    r = CliRunner().invoke(app, ["report", run])
    assert r.exit_code == 0, r.output
    assert f"report.html: {run}/report/report.html" in r.output
    assert store.read_text(f"{run}/report/report.html").count("data:image/png;base64,") == 7


def test_a_report_of_the_same_inputs_is_not_drawn_again(run, monkeypatch):
    from metareward.reporting import plots

    drawn = []
    real = plots.figures
    monkeypatch.setattr(plots, "figures", lambda rep: drawn.append(1) or real(rep))
    first = report.write_report(run)
    assert report.write_report(run) == first and len(drawn) == 1  # nothing changed: the files are reused
    # a stage's records change: the report is drawn again and shows them
    _stage(run, 1, "meta_judge", {"calls": 9, "decided": 9, "undecided": 0})
    report.write_report(run)
    assert len(drawn) == 2
    # a lost figure is drawn again too, as is a report whose stamp is unreadable
    store.fs_for(first["lengths.png"]).rm(first["lengths.png"])
    assert store.exists(report.write_report(run)["lengths.png"]) and len(drawn) == 3
    stamp = store.join(RunLayout.at(run).report, report.STAMP)
    store.write_bytes(stamp, b"{not json")
    report.write_report(run)
    assert len(drawn) == 4


def _measured(run, t: int, strict: float, accuracy: float, gap: float | None) -> None:
    """M_t's benchmark with IFEval (12 prompts), LLMBar (8 pairs) and, for t >= 1, drift figures."""
    ci = {"value": strict, "lo": strict - 0.25, "hi": strict + 0.25, "n": 12, "rounds": 1000}
    stats = {"model_iteration": t, "mean_score": 3.0, "judge": f"self (M_{t})",
             "ifeval": {**{k: strict for k in ("prompt_level_strict_acc", "inst_level_strict_acc",
                                               "prompt_level_loose_acc", "inst_level_loose_acc")},
                        "ci95": {"prompt_level_strict_acc": ci}, "n_prompts": 12, "judge": "none (checked by code)"},
             "llmbar": {"judge": f"self (M_{t})", "verdicts": "parsed (LLMBar's rule)",
                        "pooled": {"accuracy": accuracy, "agreement": 0.75, "correct_both": 0.5, "n": 8,
                                   "accuracy_ci95": {"value": accuracy, "lo": 0.25, "hi": 0.875, "n": 8}},
                        "sets": {"Natural": {"accuracy": accuracy, "n": 8}}}}
    if gap is not None:
        stats["drift"] = {"own_cur": 3.0 + gap, "ref_cur": 3.0, "gap": gap, "self_preference": 0.75,
                          "ref_preference": 0.25, "self_preference_excess": 0.5, "own_judge": f"M_{t}",
                          "answers": f"M_{t - 1} vs M_{t}", "reference_judge": "M_0"}
    _stage(run, t, "benchmark", {"eval_prompts": 2}, stats)


def test_the_judge_free_measures_are_drawn_and_tabled_for_iterations_0_1_2(run):
    """IFEval prompt-level strict 0.25, 0.5, 0.75 for M_0..M_2 (M_2: a third iteration with only its benchmark),
    LLMBar accuracy 0.5, 0.625, 0.75; drift gaps 0.5 and 1.0 for M_1 and M_2; iteration 1's drift gate passed."""
    from metareward.reporting import plots

    for t, strict, acc, gap in ((0, 0.25, 0.5, None), (1, 0.5, 0.625, 0.5), (2, 0.75, 0.75, 1.0)):
        _measured(run, t, strict, acc, gap)
    store.write_json(RunLayout.at(run).health(1), {"drift": {"passed": True, "failed": [], "metrics": {}}})
    rep = report.load_run(run)
    points = plots._measures(rep)
    assert sorted(points) == [0, 1, 2]
    assert [points[t]["ifeval/prompt_level_strict_acc_hi"] for t in (0, 1, 2)] == [0.5, 0.75, 1.0]
    assert [points[t].get("drift/gap") for t in (0, 1, 2)] == [None, 0.5, 1.0]

    measured = _table(rep.run_tables(), "Judge-free measures per model")
    assert [row[0] for row in measured.rows] == ["M_0", "M_1", "M_2"]
    m1 = dict(zip(measured.columns, measured.rows[1]))
    assert m1["IFEval prompt-level strict"] == "0.5 [0.25, 0.75] (n=12)" and m1["IFEval prompt-level loose"] == "0.5"
    assert m1["LLMBar accuracy"] == "0.625 [0.25, 0.88] (n=8)"
    assert (m1["gap (own - reference)"], m1["self-preference"], m1["reference preference"]) == (0.5, 0.75, 0.25)
    assert m1["drift gate"] == "passed" and measured.rows[2][-1] is None  # iteration 2's gate has not run
    bench = _table(report.iteration_tables(rep.iterations[1], rep), "benchmark").rows
    assert ["M_0", "IFEval prompt-level strict", "0.25 [0.00, 0.50] (n=12)", "none (checked by code)", None] in bench
    drift = dict((r[0], r[1:]) for r in _table(report.iteration_tables(rep.iterations[2]), "drift").rows)
    assert drift["mean score, M_2's answers"] == [4.0, 3.0, 1.0]

    out = report.write_report(run)
    for name in ("judge_free.png", "drift.png"):
        with store.fs_for(out[name]).open(out[name], "rb") as f:
            data = f.read()
        assert data.startswith(PNG_MAGIC) and base64.b64encode(data).decode() in store.read_text(out["report.html"])
        assert f"![{name}]({name})" in store.read_text(out["report.md"])
    html = store.read_text(out["report.html"])
    assert "<h3>Judge-free measures per model</h3>" in html and "<h3>Iteration 2: drift</h3>" in html
    # the gate's result, written after the report, makes it a report of other inputs: drawn again when asked
    before = report.inputs_digest(report.load_run(run))
    store.write_json(RunLayout.at(run).health(2), {"drift": {"passed": False, "failed": ["k"], "metrics": {}}})
    assert report.inputs_digest(report.load_run(run)) != before
    # the curves are the data: other figures draw another picture, none draws "no data yet"
    drawn = plots.judge_free(rep)
    rep.iterations[2].manifests["benchmark"].stats["ifeval"]["prompt_level_strict_acc"] = 0.1
    assert plots.judge_free(rep) != drawn
    for it in rep.iterations.values():
        it.manifests.pop("benchmark", None)
    assert plots.drift(rep) != plots.drift(report.load_run(run))
