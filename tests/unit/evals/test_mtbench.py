"""MT-Bench: FastChat's rating parser, show_result.py's averages, and its file formats."""

import json

import pytest

from metareward.evals import mtbench
from metareward.evals.io import EvalFileError


@pytest.mark.parametrize("text, rating", [
    ("Good answer.\nRating: [[8]]", 8),
    ("Rating: [[7.5]]", 7.5),
    ("[[3]] first, later [[9]]", 3),            # FastChat takes the first match
    ("no double brackets, but [6] once", 6),    # the single-bracket fallback
    ("Rating: [[8]] and [2]", 8),               # [[x]] wins over the fallback wherever it is
    ("Rating: 8/10", -1),                        # no brackets: a failed judgment
])
def test_parse_rating(text, rating):
    assert mtbench.parse_rating(text) == rating


def _row(qid, turn, score, model="m"):
    return mtbench.judgment_row(qid, model, "gpt-4", "single-v1", "prompt", f"Rating: [[{score}]]", score, turn, 0.0)


def test_score_drops_failed_and_averages_all_valid_rows():
    rows = [_row(1, 1, 8), _row(1, 2, 6), _row(2, 1, -1), _row(2, 2, 5), _row(3, 1, 9), _row(3, 2, 7)]
    s = mtbench.score(rows, {1: "writing", 2: "math", 3: "writing"})
    # valid: 8, 6, 5, 9, 7 -> overall 35/5 = 7.0 (show_result averages rows, not the two turn means: 7.25)
    assert s["score"] == 7.0 and s["n"] == 5 and s["n_failed"] == 1
    assert s["turn_1"] == 8.5          # (8 + 9) / 2
    assert s["turn_2"] == 6.0          # (6 + 5 + 7) / 3
    assert s["categories"] == {"math": 5.0, "writing": 7.5}   # writing (8 + 6 + 9 + 7) / 4


def test_score_refuses_mixed_models_unless_one_is_picked():
    rows = [_row(1, 1, 8, "a"), _row(1, 1, 4, "b")]
    with pytest.raises(ValueError, match="2 models"):
        mtbench.score(rows)
    assert mtbench.score(mtbench.select_model(rows, "b"))["score"] == 4.0


def test_reference_templates_for_math_and_second_turn():
    q = mtbench.Question(7, "math", ["What is 2+2?", "And 3+3?"], ["4", "6"])
    name, system, user = mtbench.render_single(q, ["four", "six"], 2)
    assert name == "single-math-v1-multi-turn"
    assert "### Reference answer:\n4" in user and "### Reference answer:\n6" in user
    assert "### Assistant A:\nsix" in user and system.endswith('"Rating: [[5]]".\n\n')
    name, system, user = mtbench.render_single(mtbench.Question(8, "writing", ["Hi"]), ["Hello"], 1)
    assert name == "single-v1" and system == "You are a helpful assistant."
    assert user.endswith("[Question]\nHi\n\n[The Start of Assistant's Answer]\nHello\n[The End of Assistant's Answer]")


def test_fastchat_files_round_trip(tmp_path):
    """Hand-written rows in FastChat's formats are read, and what we write reads back the same."""
    q = tmp_path / "question.jsonl"
    q.write_text('{"question_id": 81, "category": "writing", "turns": ["Q1", "Q2"]}\n'
                 '{"question_id": 111, "category": "math", "turns": ["M1", "M2"], "reference": ["R1", "R2"]}\n')
    qs = mtbench.read_questions(str(q))
    assert qs[1] == mtbench.Question(111, "math", ["M1", "M2"], ["R1", "R2"])
    mtbench.write_questions(str(tmp_path / "q2.jsonl"), qs)
    assert [json.loads(x) for x in (tmp_path / "q2.jsonl").read_text().splitlines()] == \
        [json.loads(x) for x in q.read_text().splitlines()]

    a = tmp_path / "model_answer" / "vicuna.jsonl"
    a.parent.mkdir()
    a.write_text('{"question_id": 81, "answer_id": "Xz", "model_id": "vicuna", "choices": [{"index": 0, '
                 '"turns": ["A1", "A2"]}], "tstamp": 1687221890.0}\n')
    assert mtbench.read_answers(str(a)) == {81: ["A1", "A2"]}
    mtbench.write_answers(str(tmp_path / "ours.jsonl"), "vicuna", {81: ["A1", "A2"]}, tstamp=1.0)
    ours = json.loads((tmp_path / "ours.jsonl").read_text())
    assert set(ours) == {"question_id", "answer_id", "model_id", "choices", "tstamp"}
    assert mtbench.read_answers(str(tmp_path / "ours.jsonl")) == {81: ["A1", "A2"]}

    j = tmp_path / "gpt-4_single.jsonl"
    j.write_text('{"question_id": 81, "model": "vicuna", "judge": ["gpt-4", "single-v1"], "user_prompt": "p", '
                 '"judgment": "Rating: [[9]]", "score": 9, "turn": 1, "tstamp": 1.0}\n'
                 '{"question_id": 81, "model": "vicuna", "judge": ["gpt-4", "single-v1-multi-turn"], '
                 '"user_prompt": "p", "judgment": "none", "score": -1, "turn": 2, "tstamp": 1.0}\n')
    rows = mtbench.read_judgments(str(j))
    assert mtbench.score(rows)["score"] == 9.0
    assert set(_row(1, 1, 5)) == set(rows[0])


def test_bad_rows_name_file_and_line(tmp_path):
    j = tmp_path / "j.jsonl"
    j.write_text('{"question_id": 1, "model": "m", "score": 5, "turn": 1}\n{"question_id": 1, "model": "m", '
                 '"score": "5", "turn": 1}\n')
    with pytest.raises(EvalFileError, match=r"j.jsonl: line 2: field 'score' must be a number"):
        mtbench.read_judgments(str(j))
    j.write_text('{"question_id": 1}\nnot json\n')
    with pytest.raises(EvalFileError, match=r"j.jsonl: line 2: invalid JSON"):
        mtbench.read_judgments(str(j))


def test_doctests():
    import doctest

    from metareward.evals import mtbench

    result = doctest.testmod(mtbench)
    assert result.attempted > 0 and result.failed == 0
