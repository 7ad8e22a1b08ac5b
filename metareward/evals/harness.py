"""What the benchmark stage runs for each benchmark: answer with the evaluated model, judge with the evaluator
judge, score with the harness's own arithmetic, and write the harness's files. Engines and judges are passed
in; this module opens nothing itself.

Multi-turn answers (MT-Bench turn 2) need the conversation so far. An engine with ``generate_chat(messages,
n, sampling, seed)`` gets the real message list; otherwise the conversation is folded into one user turn as a
transcript, and the stats say so (``multi_turn: "transcript"``).
"""

from __future__ import annotations

import json
from importlib import resources

from metareward.engines.base import CHATS, Sampling, can
from metareward.evals import alpaca, arena_hard, mtbench
from metareward.evals.io import EvalFileError, read_json_list, read_jsonl
from metareward.evals.judges import Chat

# Each benchmark's reference judge: only results from these (through the official endpoint, on the official
# question set) can be compared with published numbers.
REFERENCE_JUDGES = {"mt_bench": ("gpt-4",), "alpaca_eval": ("gpt-4-1106-preview", "gpt-4-turbo"),
                    "arena_hard": ("gpt-4-1106-preview",)}
NOT_COMPARABLE = "not comparable to published"


def judge_record(bench: str, judge, official_data: bool) -> dict:
    """Which judge produced a result, and whether the result may be set beside the paper's."""
    model = judge.identity.split(":", 1)[1].split("@", 1)[0] if judge.kind == "openai" else None
    ok = (official_data and judge.kind == "openai" and model in REFERENCE_JUDGES[bench]
          and "api.openai.com" in judge.identity)
    return {"judge": judge.identity, "comparable_to_published": ok,
            "label": "comparable to published" if ok else NOT_COMPARABLE}


def _greedy(max_new_tokens: int) -> Sampling:
    return Sampling(temperature=0.0, top_p=1.0, max_new_tokens=max_new_tokens)


def chat_generate(engine, conversations: list[list[dict]], max_new_tokens: int, seed: int) -> tuple[list[str], str]:
    """Greedy replies to message lists; (texts, how the history was passed: "messages" or "transcript")."""
    if not conversations:
        return [], "messages"
    if can(engine, CHATS):
        outs = engine.generate_chat(conversations, 1, _greedy(max_new_tokens), seed)
        return [cs[0].text for cs in outs], "messages"
    outs = engine.generate([transcript(c) for c in conversations], 1, _greedy(max_new_tokens), seed)
    return [cs[0].text for cs in outs], "messages" if all(len(c) == 1 for c in conversations) else "transcript"


def transcript(messages: list[dict]) -> str:
    """A conversation as one user turn: the last user message alone, or the earlier turns as a transcript."""
    if len(messages) == 1:
        return messages[0]["content"]
    history = "\n\n".join(f"{m['role'].capitalize()}: {m['content']}" for m in messages[:-1])
    return f"The conversation so far:\n\n{history}\n\nReply to the user's latest message:\n{messages[-1]['content']}"


# --------------------------------------------------------------------------------------------- data


def _hf_rows(spec: str) -> list[dict]:
    """``hf:<dataset>[:<split>]`` through the datasets library (downloads unless it is cached)."""
    from datasets import load_dataset

    name, _, split = spec[3:].partition(":")
    return [dict(r) for r in load_dataset(name, split=split or "train")]


def load_mt_questions(spec: str | None) -> tuple[list[mtbench.Question], bool]:
    """(questions, official?) from FastChat's question.jsonl, an HF dataset, or the shipped mini set."""
    if spec is None:
        res = resources.files("metareward.data") / "mini_mt_bench.jsonl"
        qs = [mtbench.Question(r["question_id"], r["category"], r["turns"], r.get("reference"))
              for r in map(json.loads, res.read_text(encoding="utf-8").splitlines()) if r]
        return qs, False
    if spec.startswith("hf:"):  # e.g. HuggingFaceH4/mt_bench_prompts: prompt_id, prompt, category, reference
        rows = _hf_rows(spec)
        return [mtbench.Question(r.get("question_id", r.get("prompt_id")), r["category"],
                                 list(r.get("turns") or r["prompt"]), list(r["reference"]) if r.get("reference")
                                 else None) for r in rows], True
    return mtbench.read_questions(spec), True


def add_references(questions: list[mtbench.Question], path: str | None) -> list[mtbench.Question]:
    """Fill math/reasoning/coding references from FastChat's reference_answer/<judge>.jsonl."""
    if path is None:
        return questions
    refs = mtbench.read_answers(path)
    return [mtbench.Question(q.question_id, q.category, q.turns, refs.get(q.question_id, q.reference))
            for q in questions]


def load_alpaca_references(spec: str | None) -> tuple[list[dict], bool]:
    """(reference rows {instruction, output, generator}, official?): alpaca_eval's reference outputs (JSON list
    or JSONL), an HF dataset (``hf:tatsu-lab/alpaca_eval:eval``), or the shipped mini set."""
    if spec is None:
        res = resources.files("metareward.data") / "mini_alpaca_eval.jsonl"
        return [json.loads(line) for line in res.read_text(encoding="utf-8").splitlines() if line.strip()], False
    if spec.startswith("hf:"):
        return _hf_rows(spec), True
    rows = read_jsonl(spec) if spec.endswith(".jsonl") else read_json_list(spec)
    for n, r in rows:
        if not isinstance(r.get("instruction"), str) or not isinstance(r.get("output"), str):
            raise EvalFileError(f"{spec}: line {n}: needs string fields 'instruction' and 'output'")
    return [r for _, r in rows], True


# --------------------------------------------------------------------------------------------- MT-Bench


def second_turns(engine, questions: list[mtbench.Question], first: dict, max_new_tokens: int, seed: int):
    """({question_id: [turn 1, turn 2]}, how the history was passed), turn 2 answered with ``first`` (turn 1's
    answers by question id) in the history."""
    two = [q for q in questions if len(q.turns) > 1]
    convs = [[{"role": "user", "content": q.turns[0]}, {"role": "assistant", "content": first[q.question_id]},
              {"role": "user", "content": q.turns[1]}] for q in two]
    second, how = chat_generate(engine, convs, max_new_tokens, seed)
    answers = {q.question_id: [first[q.question_id]] for q in questions}
    for q, a in zip(two, second):
        answers[q.question_id].append(a)
    return answers, how


def expected_ratings(judge, chats: list[Chat]) -> list[float]:
    """A local judge's rating without free text: after a forced ``Rating: [[`` the expected value of 1..10.

    P(first digit d) for d = 1..9 in one pass; "10" shares the digit "1", so a second pass after
    ``Rating: [[1`` splits P("1") into P(10) (next "0") and P(1) (next "]]")."""
    first = judge.choice_probs(chats, mtbench.RATING_PREFIX, [str(d) for d in range(1, 10)])
    ten = judge.choice_probs(chats, mtbench.RATING_PREFIX + "1", ["0", "]]"])
    out = []
    for p, q in zip(first, ten):
        dist = [p[0] * q[1]] + list(p[1:]) + [p[0] * q[0]]  # ratings 1, 2..9, 10
        out.append(round(sum((k + 1) * pk for k, pk in enumerate(dist)), 4))
    return out


def judge_mt_bench(judge, questions: list[mtbench.Question], answers: dict, model_id: str, scoring: str,
                   max_tokens: int, tstamp: float | None = None) -> list[dict]:
    """FastChat judgment rows for every (question, turn) answered; score -1 where no rating was found. ``tstamp``:
    the rows' time (None: now)."""
    jobs = []
    for q in questions:
        for turn in (1, 2)[:len(answers[q.question_id])]:
            name, system, user = mtbench.render_single(q, answers[q.question_id], turn)
            jobs.append((q, turn, name, Chat(system, user)))
    chats = [c for *_, c in jobs]
    if scoring == "expected":
        scores = expected_ratings(judge, chats)
        texts = [f"{mtbench.RATING_PREFIX}{s}]]" for s in scores]  # parse_rating(text) gives the score back
    else:
        texts = judge.generate(chats, max_tokens)
        scores = [mtbench.parse_rating(t) for t in texts]
    return [mtbench.judgment_row(q.question_id, model_id, judge.identity, name, c.user, text, s, turn, tstamp)
            for (q, turn, name, c), text, s in zip(jobs, texts, scores)]


# --------------------------------------------------------------------------------------------- AlpacaEval


def annotate_alpaca(judge, refs: list[dict], outputs: list[str], generator: str, seed: int) -> list[dict]:
    """Pairwise annotations, reference as output_1 and the model as output_2; each instruction's display
    order is randomised (seeded) and the preference mapped back, as alpaca_eval does."""
    swaps = [alpaca.is_swapped(r["instruction"], seed) for r in refs]
    chats = []
    for r, out, sw in zip(refs, outputs, swaps):
        shown = (out, r["output"]) if sw else (r["output"], out)
        chats.append(Chat(*alpaca.render(r["instruction"], *shown)))
    probs = judge.choice_probs(chats, "", alpaca.CHOICES)
    rows = []
    for r, out, sw, p in zip(refs, outputs, swaps, probs):
        pref = alpaca.preference_from_probs(None if p is None else p[0])
        pref = alpaca.unswap(pref) if sw and pref == pref else pref  # NaN stays NaN
        rows.append(alpaca.annotation_row(r["instruction"], r["output"], r.get("generator", "reference"), out,
                                          generator, judge.identity, pref,
                                          {"p_m": None if p is None else p[0], "swapped": sw}))
    return rows


# --------------------------------------------------------------------------------------------- Arena-Hard


def judge_arena_hard(judge, questions: list[dict], answers: dict, baseline: dict, model_id: str,
                     max_tokens: int) -> list[dict]:
    """Two games per question (baseline as A, then the model as A); one attempt each."""
    qs = [q for q in questions if q["question_id"] in answers and q["question_id"] in baseline]
    chats = []
    for q in qs:
        a, b = baseline[q["question_id"]], answers[q["question_id"]]
        chats += [Chat(*arena_hard.render(q["prompt"], a, b)), Chat(*arena_hard.render(q["prompt"], b, a))]
    texts = judge.generate(chats, max_tokens)
    rows = []
    for i, q in enumerate(qs):
        games = [(chats[2 * i + g].user, texts[2 * i + g], arena_hard.get_score(texts[2 * i + g])) for g in (0, 1)]
        rows.append(arena_hard.judgment_row(q["question_id"], model_id, judge.identity, games))
    return rows
