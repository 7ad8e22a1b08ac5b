"""metareward.method.parsing: reading judge scores and meta-judge verdicts from model text."""

from __future__ import annotations

import doctest

import pytest

from metareward.method import parsing
from metareward.method.parsing import justification, parse_score, parse_verdict, strip_score, verdict_reasoning


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Score: 4", 4.0),
        ("score: 4.5", 4.5),
        ("**Score:** 3", 3.0),
        ("**Score: 3**", 3.0),
        ("Score: 4/5", 4.0),
        ("Score: 4 out of 5", 4.0),
        ("Score: 4 points", 4.0),
        ("Total points: 3", 3.0),
        ("Points: 2", 2.0),
        ("Score = 4", 4.0),
        ("Score: [4]", 4.0),
        ("Final score: 0", 0.0),
        ("The answer is complete.\nScore: 4.", 4.0),  # the sentence's full stop is not part of the number
        ("Score: 4.75", 4.75),  # trained judges write fractional scores (method.md 9.1)
    ],
)
def test_parse_score_variants(text, expected):
    """Every variant a model writes for 'Score: <total points>' gives the number it states."""
    assert parse_score(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "The response is helpful and I would rate it highly.",
        'Conclude with the score using the format: "Score: <total points>"',  # the format string, no number
        "Score: 7",  # outside [0, 5]
        "Score: 5.5",
        "Score: -1",  # no minus sign in the pattern: not a score
        "Score: 4/10",  # another scale: 4/10 is not 4/5
        "Subscore: 3",  # 'score' must be a whole word
    ],
)
def test_parse_score_failures(text):
    """No score statement, or one outside [0, 5], is unparseable (None), never a guess."""
    assert parse_score(text) is None


def test_parse_score_takes_last_match_after_quoted_format():
    """Models quote the format first; the LAST statement (here 2, not the earlier 5) is the verdict."""
    text = 'I will use "Score: <total points>". An earlier draft said Score: 5.\nOn reflection:\nScore: 2'
    assert parse_score(text) == 2.0


def test_parse_score_custom_range():
    """lo/hi bound the accepted value and the accepted denominator: 8/10 is valid with hi=10."""
    assert parse_score("Score: 8/10", lo=0, hi=10) == 8.0
    assert parse_score("Score: 8", lo=0, hi=10) == 8.0
    assert parse_score("Score: 0", lo=1, hi=5) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Winner: Judgment A", "A"),
        ("Winner: Judgement B", "B"),
        ("Winner: A", "A"),
        ("Winner: [Judgement B]", "B"),
        ("**Winner:** Judgment A", "A"),
        ("Winner: Judgment A.", "A"),
        ("winner: judgement b", "B"),
        ("The winner is Judgment B", "B"),
    ],
)
def test_parse_verdict_variants(text, expected):
    """NeMo's 'Winner: Judgement X' plus the decorations models add."""
    assert parse_verdict(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "Judgment A is more thorough than Judgment B, though Judgment B is shorter.",  # both named, no Winner line
        'Conclude using the format "Winner: [Judgement A | Judgement B]"',  # an echo of the format string
        "Winner: a tie",  # a bare lower-case 'a' is an article, not a verdict
        "Winner: Both",
        "Winner: Judgment C",
    ],
)
def test_parse_verdict_failures(text):
    """No Winner statement naming A or B means no verdict (None: outcome 0 in the battle matrix)."""
    assert parse_verdict(text) is None


def test_parse_verdict_takes_last_match():
    """A model that first restates the format and changes its mind ends with the verdict that counts."""
    text = "Format: Winner: [Judgement A | Judgement B]\nInitially Winner: Judgment A\nBut no.\nWinner: Judgment B"
    assert parse_verdict(text) == "B"


def test_justification_cuts_before_final_score():
    """'expected' scoring appends 'Score: ' to the justification, so the score statement must be gone."""
    text = 'Using "Score: <total points>":\nRelevant and complete.\n**Score:** 4'
    assert justification(text) == 'Using "Score: <total points>":\nRelevant and complete.'
    assert justification("Good answer. Total points: 3") == "Good answer."
    assert justification("  No score at all.  ") == "No score at all."


def test_verdict_reasoning_cuts_before_final_winner():
    """The reasoning keeps everything before the last Winner statement, stripped."""
    assert verdict_reasoning("A follows the rubric.\n**Winner:** Judgment A") == "A follows the rubric."
    assert verdict_reasoning("Undecided. ") == "Undecided."


def test_strip_score_removes_score_lines():
    """Score-only lines are dropped; a mid-line statement is cut; the rest is unchanged."""
    text = "Relevant.\n**Score:** 3\nClear.\nScore: 4"
    assert strip_score(text) == "Relevant.\nClear."
    assert strip_score("It earns Score: 4 overall") == "It earns overall"
    assert strip_score("No score here.") == "No score here."
    assert parse_score(strip_score(text)) is None


def test_doctests():
    """The docstring examples are real input/output."""
    result = doctest.testmod(parsing)
    assert result.attempted > 0 and result.failed == 0
