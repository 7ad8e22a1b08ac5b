"""`metareward eval ...`: one JSON object on stdout per command, and one-line errors naming file and line."""

import json
import subprocess
import sys

from typer.testing import CliRunner

from metareward.cli import app

runner = CliRunner()


def _run(*args):
    r = runner.invoke(app, ["eval", *args])
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def test_mt_bench(tmp_path):
    j = tmp_path / "gpt-4_single.jsonl"
    rows = [(81, 1, 8), (81, 2, -1), (82, 1, 6), (82, 2, 4)]
    j.write_text("".join(json.dumps({"question_id": q, "model": "m", "judge": ["gpt-4", "single-v1"],
                                     "user_prompt": "", "judgment": "", "score": s, "turn": t, "tstamp": 0})
                         + "\n" for q, t, s in rows))
    q = tmp_path / "question.jsonl"
    q.write_text('{"question_id": 81, "category": "writing", "turns": ["a", "b"]}\n'
                 '{"question_id": 82, "category": "roleplay", "turns": ["a", "b"]}\n')
    out = _run("mt-bench", "--judgments", str(j), "--questions", str(q))
    # valid 8, 6, 4: overall 6.0, turn 1 (8 + 6) / 2 = 7.0, turn 2 4.0; writing 8, roleplay (6 + 4) / 2 = 5
    assert out == {"model": "m", "score": 6.0, "turn_1": 7.0, "turn_2": 4.0, "n": 3, "n_failed": 1,
                   "categories": {"roleplay": 5.0, "writing": 8.0}}


def test_alpaca(tmp_path):
    a = tmp_path / "annotations.json"
    a.write_text(json.dumps([{"instruction": f"i{k}", "output_1": "r", "output_2": "o", "generator_2": "m",
                              "preference": p} for k, p in enumerate([2, 1, 2, 1.5])]))
    out = _run("alpaca", "--annotations", str(a))
    # p - 1 = 1, 0, 1, .5: mean .625; sample sd of those = sqrt(((.375^2)*2 + .625^2 + .125^2) / 3) = .478714
    assert out["win_rate"] == 62.5 and abs(out["standard_error"] - 47.8714 / 2) < 1e-3
    assert (out["n_wins"], out["n_wins_base"], out["n_draws"], out["n_total"]) == (2, 1, 1, 4)
    assert "lc_win_rate" not in out and "approximation" in out["lc_note"]


def test_agreement(tmp_path):
    (tmp_path / "l.jsonl").write_text('{"id": "1", "label": "a"}\n{"id": "2", "label": "tie"}\n{"id": "3", '
                                      '"label": "b"}\n')
    (tmp_path / "v.jsonl").write_text('{"id": "1", "verdict": "a"}\n{"id": "2", "verdict": "a"}\n{"id": "3", '
                                      '"verdict": "b"}\n')
    out = _run("agreement", "--labels", str(tmp_path / "l.jsonl"), "--verdicts", str(tmp_path / "v.jsonl"))
    # 2 of 3 agree; without ties (id 2 out): 2 of 2
    assert (out["agreement"], out["agreement_without_ties"], out["n"], out["n_ties"]) == (2 / 3, 1.0, 3, 1)
    assert out["swap_consistency"] is None   # no verdict_swapped given: null, never NaN in the JSON


def test_arena_hard(tmp_path):
    d = tmp_path / "gpt-4-1106-preview"
    d.mkdir()
    games = [["A>B", "A>B"], ["B>A", "A=B"], ["A=B", "A>B"]]
    d.joinpath("m.jsonl").write_text("".join(json.dumps(
        {"question_id": i, "model": "m", "judge": "gpt-4-1106-preview",
         "games": [{"user_prompt": "", "judgment": "", "score": s} for s in g]}) + "\n" for i, g in enumerate(games)))
    out = _run("arena-hard", "--judgments", str(d), "--rounds", "20")
    # game 1 (baseline = A): A>B baseline, B>A model, A=B tie; game 2 (model = A): A>B model, A=B tie, A>B model
    # -> 3 model wins, 1 baseline win, 2 ties of 6: (3 + 1) / 6 = 66.67 %
    assert out["model"] == "m" and out["score"] == 66.67 and out["ci_low"] <= 66.67 <= out["ci_high"]


def test_errors_are_one_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question_id": 1, "model": "m", "score": 5, "turn": 3}\n')
    p = subprocess.run([sys.executable, "-m", "metareward", "eval", "mt-bench", "--judgments", str(bad)],
                       capture_output=True, text=True)
    assert p.returncode == 2
    assert p.stderr.strip() == f"error: {bad}: line 1: field 'turn' must be 1 or 2, got 3"
