"""Arena-Hard v0.1: verdict parsing, battles with weights and swapped games, the Bradley-Terry score against
the baseline and its bootstrap interval with the harness's seed, and the arena-hard-auto file formats."""

import json
import math

import numpy as np
import pytest

from metareward.evals import arena_hard


def test_get_score():
    assert arena_hard.get_score("...so my final verdict is: [[A>>B]]") == "A>>B"
    assert arena_hard.get_score("[[B>A]] ... repeated: [[B>A]]") == "B>A"   # the same label twice is fine
    assert arena_hard.get_score("[[A>B]] or maybe [[A=B]]") is None          # two labels: no score
    assert arena_hard.get_score("no label at all") is None


def _row(qid, s1, s2, model="mine"):
    return arena_hard.judgment_row(qid, model, "gpt-4-1106-preview", [("p1", "j1", s1), ("p2", "j2", s2)])


# Game 1 shows the baseline as A, game 2 shows the model as A.
ROWS = [_row(1, "A>B", "A>>B"),   # baseline x1, then model (as A) x3
        _row(2, "B>A", "A=B"),    # model (as B) x1, tie x1
        _row(3, None, "B>A"),     # unparsed game gives nothing; game 2 B = baseline x1
        _row(4, "A=B", "A=B")]    # tie x2


def test_battles_weights_and_swapped_positions():
    assert arena_hard.battles(ROWS) == [("mine", w) for w in
                                        ["baseline", "model", "model", "model", "model", "tie", "baseline", "tie",
                                         "tie"]]
    assert arena_hard.battles(ROWS, first_game_only=True) == [("mine", w) for w in
                                                              ["baseline", "model", "tie"]]


def _elo(share):
    """Two players only: the BT MLE gives P(model beats baseline) = (2 wins + ties) / (2 battles), the win share
    with ties as halves; on the Elo scale 1000 + 400 log10(s / (1 - s))."""
    return 1000 + 400 * math.log10(share / (1 - share))


def test_score_and_bootstrap_interval():
    out = arena_hard.score(ROWS)["mine"]
    # 9 battles: 4 model wins, 2 baseline wins, 3 ties -> (4 + 3/2) / 9 = 0.6111 -> 61.11 %
    assert out["score"] == 61.11 and out["n_battles"] == 9
    # the interval, replicated independently: seed 42, 100 resamples of the 9 battle rows (RandomState.choice, as
    # pandas' sample(frac=1, replace=True)), each resample's closed-form Elo, percentiles 2.5 / 97.5, back to %
    kinds = [w for _, w in arena_hard.battles(ROWS)]
    rs = np.random.RandomState(42)
    elos = []
    for _ in range(100):
        s = [kinds[i] for i in rs.choice(9, size=9, replace=True)]
        assert "tie" in s or {"model", "baseline"} <= set(s)  # not one-sided: the closed form is finite
        elos.append(_elo((s.count("model") + s.count("tie") / 2) / 9))
    lo, hi = (round(100 / (1 + 10 ** ((1000 - np.percentile(elos, q)) / 400)), 2) for q in (2.5, 97.5))
    assert (out["ci_low"], out["ci_high"]) == pytest.approx((lo, hi), abs=0.011)
    assert lo < 61.11 < hi
    assert out["display"] == f"61.1 ({round(out['ci_low'] - 61.11, 1):+.1f}, {round(out['ci_high'] - 61.11, 1):+.1f})"


def test_bradley_terry_with_two_models_is_per_model():
    """Every battle is model vs baseline, so each model's rating depends on its own battles only."""
    rows = ROWS + [_row(1, "B>>A", "A>B", "other")]   # other: model x3, model x1 -> 4 wins, no loss
    both = arena_hard.score(rows, rounds=5)
    assert both["mine"]["score"] == 61.11
    assert both["other"]["score"] > 99.0   # never lost: no finite MLE, the fit stops at a large rating


def test_arena_hard_files_round_trip(tmp_path):
    j = tmp_path / "model_judgment" / "gpt-4-1106-preview" / "mine.jsonl"
    j.parent.mkdir(parents=True)
    j.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    assert arena_hard.read_judgments(str(j)) == ROWS
    q = tmp_path / "question.jsonl"
    q.write_text('{"question_id": "328c149ed45a41c0b9d6f14659e63599", "category": "arena-hard-v0.1", '
                 '"cluster": "ABC Sequence Puzzles & Groups", "turns": [{"content": "Use ABC notation"}]}\n')
    assert arena_hard.read_questions(str(q))[0]["prompt"] == "Use ABC notation"
    a = tmp_path / "model_answer" / "gpt-4-0314.jsonl"
    a.parent.mkdir()
    a.write_text('{"question_id": "328c", "answer_id": "a1", "model_id": "gpt-4-0314", "choices": [{"index": 0, '
                 '"turns": [{"content": "X:1", "token_len": 2}]}], "tstamp": 1.0}\n')
    assert arena_hard.read_answers(str(a)) == {"328c": "X:1"}
    arena_hard.write_rows(str(tmp_path / "ours.jsonl"), [arena_hard.answer_row("328c", "gpt-4-0314", "X:1", 2, 1.0)])
    assert arena_hard.read_answers(str(tmp_path / "ours.jsonl")) == {"328c": "X:1"}


def test_prompt_layout():
    system, user = arena_hard.render("Q", "BASE", "MINE")
    assert "[[A>>B]]" in system and system.endswith('"My final verdict is tie: [[A=B]]".')
    assert user == ("<|User Prompt|>\nQ\n\n<|The Start of Assistant A's Answer|>\nBASE\n<|The End of Assistant A's "
                    "Answer|>\n\n<|The Start of Assistant B's Answer|>\nMINE\n<|The End of Assistant B's Answer|>")


def test_doctests():
    import doctest

    from metareward.evals import arena_hard

    result = doctest.testmod(arena_hard)
    assert result.attempted > 0 and result.failed == 0
