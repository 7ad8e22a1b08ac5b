"""The judge and meta-judge prompts, verbatim from Self-Rewarding (Yuan et al. 2024, Fig. 2) and
Meta-Rewarding (Wu et al. 2024), as reproduced by NeMo-Aligner and lucidrains (see method.md 3.2 and 4.2).

Each is sent as a single user turn; the engine applies the model's chat template.
"""

from __future__ import annotations

RUBRIC = """\
- Add 1 point if the response is relevant and provides some information related to
the user's inquiry, even if it is incomplete or contains some irrelevant content.
- Add another point if the response addresses a substantial portion of the user's question,
but does not completely resolve the query or provide a direct answer.
- Award a third point if the response answers the basic elements of the user's question in a
useful way, regardless of whether it seems to have been written by an AI Assistant or if it
has elements typically found in blogs or search results.
- Grant a fourth point if the response is clearly written from an AI Assistant's perspective,
addressing the user's question directly and comprehensively, and is well-organized and
helpful, even if there is slight room for improvement in clarity, conciseness or focus.
- Bestow a fifth point for a response that is impeccably tailored to the user's question
by an AI Assistant, without extraneous information, reflecting expert knowledge, and
demonstrating a high-quality, engaging, and insightful answer."""

JUDGE_TEMPLATE = """\
Review the user's question and the corresponding response using the additive 5-point
scoring system described below. Points are accumulated based on the satisfaction of each
criterion:
{rubric}

User: {prompt}
<response>{response}</response>

After examining the user's instruction and the response:
- Briefly justify your total score, up to 100 words.
- Conclude with the score using the format: "Score: <total points>"
Remember to assess from the AI Assistant perspective, utilizing web search knowledge as
necessary. To evaluate the response in alignment with this additive scoring model, we'll
systematically attribute points based on the outlined criteria."""

META_JUDGE_TEMPLATE = """\
Review the user's question and the corresponding response, along with two judgments.
Determine which judgment is more accurate according to the rubric provided below. The
rubric used for the initial judgments is as follows:
{rubric}

User: {prompt}
Response: {response}
Judgment A: {judgment_a}
Judgment B: {judgment_b}

After examining the original question, response, and both judgments:
- Explain which judgment is more accurate according to the original rubric and why.
Consider factors such as adherence to the rubric, accuracy in evaluating the response, and
consistency in applying the criteria.
- Conclude with a clear statement of which judgment is better using the format:
"Winner: [Judgement A | Judgement B]\""""

# What `expected` scoring appends after the model's justification before reading the next-token distribution.
SCORE_PREFIX = "Score: "
SCORE_CHOICES = ["0", "1", "2", "3", "4", "5"]
VERDICT_PREFIX = "Winner: Judgment "
VERDICT_CHOICES = ["A", "B"]

# First lines, used by the fake engine to tell the roles apart.
JUDGE_HEAD = JUDGE_TEMPLATE.split("\n", 1)[0]
META_JUDGE_HEAD = META_JUDGE_TEMPLATE.split("\n", 1)[0]


def render_judge(prompt: str, response: str) -> str:
    """The judge's user turn for one (instruction, response)."""
    return JUDGE_TEMPLATE.format(rubric=RUBRIC, prompt=prompt, response=response)


def render_meta_judge(prompt: str, response: str, judgment_a: str, judgment_b: str) -> str:
    """The meta-judge's user turn comparing two judgments of the same response, A shown first."""
    return META_JUDGE_TEMPLATE.format(
        rubric=RUBRIC, prompt=prompt, response=response, judgment_a=judgment_a, judgment_b=judgment_b
    )
