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
    assert set(out) >= {"report.html", "report.md", "judge_scores.png", "lengths.png", "meta_bias.png"}
    html = store.read_text(out["report.html"])
    embedded = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", html)
    assert len(embedded) == 5
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
    assert store.read_text(f"{run}/report/report.html").count("data:image/png;base64,") == 5


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
