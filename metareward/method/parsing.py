"""Reading scores and verdicts out of judge and meta-judge text (method.md 3.2 and 4.2).

The prompts ask for ``Score: <total points>`` and ``Winner: [Judgement A | Judgement B]``, but real models
decorate the line (markdown bold, brackets, ``/5``, "points", a trailing full stop). The patterns below accept
those decorations and nothing looser, and always take the LAST statement in the text, because models often
quote the requested format before giving their own answer.

    >>> parse_score('I will use the format "Score: <total points>".\\n**Score:** 4/5')
    4.0
    >>> parse_verdict("Winner: [Judgement B]")
    'B'
"""

from __future__ import annotations

import re
from typing import Literal

_NUM = r"[0-9]+(?:\.[0-9]+)?"

# Base: NeMo-Aligner's DEFAULT_REWARD_REGEX_TEMPLATE ``(?i)(?:Score|Points): ([0-9\.]+)`` and LUCI's
# ``Score: ([0-9\.]+)``. Extended with: an optional "Total/Final/Overall" lead-in and markdown bold around the
# keyword (so `justification` cuts the whole statement), ``=`` as well as ``:``, brackets around the number, and
# an optional ``/5`` or ``out of 5``. The number is ``4`` or ``4.5`` but never swallows a sentence's full stop
# (NeMo's ``[0-9\.]+`` reads "4.5." and then fails float()).
_SCORE_RE = re.compile(
    r"(?:\*\*|__)?(?:\b(?:total|final|overall)\s+)?\b(?:score|points)\b\s*(?:\*\*|__)?\s*[:=]\s*(?:\*\*|__)?"
    rf"\s*\[?\s*(?P<value>{_NUM})\s*\]?(?:\s*(?:/|out\s+of)\s*(?P<denom>{_NUM}))?"
    r"(?:\s*points?\b)?(?:\*\*|__)?",
    re.IGNORECASE,
)

# Base: NeMo-Aligner's ``(?i)Winner: (?:Judgement|Judgment) ([AB])``. Extended with markdown bold, brackets,
# "Winner is", and a bare letter ("Winner: A"). A bare letter must be upper-case: with (?i) "Winner: a tie"
# would read as A; after the word "Judgment" a lower-case letter is unambiguous and allowed.
# The lookahead rejects an echo of the format string "Winner: [Judgement A | Judgement B]".
_VERDICT_RE = re.compile(
    r"(?:\*\*|__)?\b(?i:winner)\b\s*(?:\*\*|__)?\s*(?:[:=]|\s(?i:is))\s*(?:\*\*|__)?\s*\[?\s*"
    r"(?:(?i:judge?ment)\s+(?P<named>[ABab])|(?P<bare>[AB]))\b(?!\s*\|)",
)


def _last(pattern: re.Pattern, text: str) -> re.Match | None:
    """The last match of ``pattern`` in ``text``, or None.

    >>> _last(_SCORE_RE, "Score: 2 ... Score: 3").group("value")
    '3'
    """
    match = None
    for match in pattern.finditer(text):
        pass
    return match


def parse_score(text: str, lo: float = 0.0, hi: float = 5.0) -> float | None:
    """The judge's score from its last score statement; None when absent or outside [lo, hi].

    A ``/N`` or ``out of N`` denominator must equal ``hi``: "Score: 4/10" is on another scale, and reading it
    as 4 of 5 would be wrong, so it counts as unparseable.

    >>> parse_score("Relevant and complete.\\nScore: 4.5")
    4.5
    >>> parse_score("Total points: 3"), parse_score("Score: 4/10"), parse_score("Score: 7")
    (3.0, None, None)
    """
    match = _last(_SCORE_RE, text)
    if match is None:
        return None
    denom = match.group("denom")
    if denom is not None and float(denom) != hi:
        return None
    value = float(match.group("value"))
    return value if lo <= value <= hi else None


def parse_verdict(text: str) -> Literal["A", "B"] | None:
    """The meta-judge's winner from its last ``Winner:`` statement; None when there is none.

    A text that discusses both judgments but never writes a Winner line is a non-answer, not a tie-break.

    >>> parse_verdict("Judgment A is vague.\\n**Winner:** Judgment B.")
    'B'
    >>> parse_verdict("Both Judgment A and Judgment B are fine.") is None
    True
    """
    match = _last(_VERDICT_RE, text)
    if match is None:
        return None
    return (match.group("named") or match.group("bare")).upper()  # type: ignore[return-value]


def justification(text: str) -> str:
    """The text before the final score statement, stripped ('expected' scoring appends "Score: " to it).

    >>> justification("Clear and correct.\\n**Score:** 4")
    'Clear and correct.'
    >>> justification("No score here.")
    'No score here.'
    """
    match = _last(_SCORE_RE, text)
    return (text[: match.start()] if match else text).strip()


def verdict_reasoning(text: str) -> str:
    """The text before the final ``Winner`` statement, stripped ('expected' meta-judging appends the verdict).

    >>> verdict_reasoning("A follows the rubric.\\nWinner: Judgment A")
    'A follows the rubric.'
    """
    match = _last(_VERDICT_RE, text)
    return (text[: match.start()] if match else text).strip()


def strip_score(text: str) -> str:
    """The judgment without its score statement(s), as NeMo-Aligner shows judgments to the meta-judge.

    NeMo deletes only the matched ``Score: x`` text; here a line left holding nothing but punctuation or
    markdown is dropped too, so the meta-judge does not see a dangling "**" or ".".

    >>> strip_score("Relevant and clear.\\nScore: 4")
    'Relevant and clear.'
    >>> strip_score("Relevant.\\n**Score:** 3\\nNothing else.")
    'Relevant.\\nNothing else.'
    """
    kept = []
    for line in text.splitlines():
        cleaned = _SCORE_RE.sub("", line)
        if cleaned != line and not cleaned.strip(" \t*_.,;:-"):
            continue  # the line was only the score statement
        kept.append(cleaned.rstrip())
    return "\n".join(kept).strip()
