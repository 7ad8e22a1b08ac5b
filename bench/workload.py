"""The workload the bench's engine sections share: the smoke recipe's requests, built and timed one way.

bench.py's engine section runs it at the smoke recipe's size (N_PROMPTS prompts, K responses each, N_JUDGE
judgments of every response) against the peers; scaling.py runs our engine alone on the same kind of requests at
bigger sizes. Both take from here, and neither imports the other's workload: bench.py -> scaling.py -> workload.py,
bench.py -> workload.py.

- generate: every prompt K samples, ACTOR_TOKENS new tokens at most;
- judge: every response N samples of the paper's rubric prompt (`render_judge`), JUDGE_TOKENS;
- meta-judge: the first response of each prompt, every ordered pair of its N judgments (`render_meta_judge`, both
  orders, so its position bias averages out), one sample each, META_TOKENS;
- the paper's sampling (T 0.8, top-p 0.95); judges write text; the smoke recipe's batch size and dtype (``auto``
  resolved for this CPU by `metareward.hardware`).

Importing this module loads no torch: the engine and the prompts are imported inside the functions.
"""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results.json"

# The smoke prompts, the smoke recipe's K and N, the paper's sampling.
N_PROMPTS, K, N_JUDGE = 16, 4, 3
ACTOR_TOKENS, JUDGE_TOKENS, META_TOKENS = 96, 64, 64
TEMPERATURE, TOP_P = 0.8, 0.95
STAGES = ("generate", "judge", "meta_judge")
MAX_TOKENS = {"generate": ACTOR_TOKENS, "judge": JUDGE_TOKENS, "meta_judge": META_TOKENS}


def recipe():
    """The smoke recipe: the bench measures what `make run` uses (its batch size, dtype and training precision,
    resolved for this machine by `metareward.hardware`: bf16 only where the CPU computes it natively)."""
    from metareward.config import load_config

    return load_config("smoke")


def smoke_prompts() -> list[str]:
    """The shipped smoke prompts (metareward/data/smoke_prompts.jsonl), in file order."""
    from importlib import resources

    rows = resources.files("metareward.data").joinpath("smoke_prompts.jsonl").read_text().splitlines()
    return [json.loads(r)["prompt"] for r in rows if r.strip()]


def sampling(max_new_tokens: int):
    """The paper's sampling with a stage's length limit."""
    from metareward.engines.base import Sampling

    return Sampling(temperature=TEMPERATURE, top_p=TOP_P, max_new_tokens=max_new_tokens)


def timed_generate(engine, texts: list[str], n: int, sampling) -> tuple[list[list], int, float]:
    """Our engine on one stage's texts, n samples each: (completions, tokens generated, wall seconds), timed from
    the texts to the completions (chat template and tokenising included)."""
    start = time.perf_counter()
    outs = engine.generate(texts, n, sampling, seed=0)
    secs = time.perf_counter() - start
    return outs, sum(c.n_tokens for row in outs for c in row), secs


def requests(prompts: int, k: int, n: int) -> dict[str, int]:
    """Rows each stage generates for a run of ``prompts`` prompts: K responses each, N judgments of every
    response, and N x (N - 1) ordered pairs of one response's judgments for the meta-judge.

    >>> requests(16, 4, 3)
    {'generate': 64, 'judge': 192, 'meta_judge': 96}
    """
    return {"generate": prompts * k, "judge": prompts * k * n, "meta_judge": prompts * n * (n - 1)}


def answered(prompts: list[str], responses: list[list]) -> list[tuple[str, str]]:
    """(prompt, response text) for every response, in prompt order."""
    return [(p, c.text) for p, row in zip(prompts, responses) for c in row]


def judge_texts(answers: list[tuple[str, str]]) -> list[str]:
    """The judge's prompt for every (prompt, response)."""
    from metareward.method.prompts import render_judge

    return [render_judge(p, a) for p, a in answers]


def meta_judge_texts(answers: list[tuple[str, str]], judged: list[list], k: int) -> list[str]:
    """As the smoke recipe's meta-judge (`metareward.method.pairs.meta_judge_requests`): the first response of each
    prompt (every k-th answer), every pair of its judgments in both orders."""
    from metareward.method.prompts import render_meta_judge

    out = []
    for (p, a), js in list(zip(answers, judged))[::k]:
        for i, j in itertools.combinations(range(len(js)), 2):
            out += [render_meta_judge(p, a, js[i].text, js[j].text), render_meta_judge(p, a, js[j].text, js[i].text)]
    return out
