"""The measures that need no judge to pay: IFEval (instructions checked by code) and LLMBar (the model's own judge on
pairs whose better output is known), scored from the answers stage's rows with the official tools' arithmetic and
written in their own files, each figure with its sample size and a 95% bootstrap interval (`metareward.intervals`).

    <benchmark stage>/ifeval/input_response_data.jsonl     {prompt, response}: what the official evaluator reads
    <benchmark stage>/ifeval/eval_results_strict.jsonl     the official evaluator's rows
    <benchmark stage>/ifeval/eval_results_loose.jsonl
    <benchmark stage>/llmbar/<set>/result.json             LLMBar's evaluator output rows
    <benchmark stage>/llmbar/<set>/statistics.json         LLMBar's statistics of them
"""

from __future__ import annotations

from metareward.intervals import bootstrap
from metareward.evals.io import write_json, write_jsonl
from metareward.pipeline.answers import llmbar_id
from metareward.pipeline.contract import Output
from metareward.records import EvalAnswer
from metareward.runstore import store

def ifeval_results(prompts: list[dict], got: dict[str, EvalAnswer], folder: str, res: Output, seed: int) -> None:
    """IFEval's four accuracies (lm-eval's names), per category and instruction, the official files, intervals."""
    from metareward.evals import ifeval

    answers = [got[f"ifeval/{r['key']}"] for r in prompts]
    responses = {r["prompt"]: a.text for r, a in zip(prompts, answers)}
    strict, loose = ifeval.evaluate(prompts, responses)
    base = store.join(folder, "ifeval")
    uri = store.join(base, "input_response_data.jsonl")
    res.add("ifeval_responses", uri, write_jsonl(uri, [{"prompt": p, "response": r} for p, r in responses.items()]))
    for name, digest in ifeval.write_results(base, strict, loose).items():  # the official evaluator's bytes
        res.add(f"ifeval_{name.removesuffix('.jsonl').removeprefix('eval_results_')}", store.join(base, name), digest)
    summary = ifeval.summarize(strict, loose)
    intervals = {}
    for name, rows in (("strict", strict), ("loose", loose)):
        follow = [r["follow_instruction_list"] for r in rows]
        intervals[f"prompt_level_{name}_acc"] = bootstrap([float(all(f)) for f in follow], seed=seed)
        intervals[f"inst_level_{name}_acc"] = bootstrap([sum(f) for f in follow], [len(f) for f in follow], seed=seed)
    res.counts.update(ifeval_prompts=len(prompts), ifeval_truncated=sum(a.finish_reason == "length" for a in answers))
    res.stats["ifeval"] = {**summary, "ci95": intervals, "judge": "none (checked by code)",
                           "mean_chars": round(sum(len(a.text) for a in answers) / len(answers), 1) if answers else None}


def llmbar_results(sets: dict[str, list[dict]], got: dict[str, EvalAnswer], folder: str, res: Output, scoring: str,
                   judge: str, seed: int) -> None:
    """Per set and pooled: LLMBar's accuracy (both orders' mean), agreement and correct_both, with the set's own
    result.json and statistics.json; accuracy's interval resamples pairs."""
    from metareward.evals import llmbar

    per_set, pooled = {}, []
    for name, items in sets.items():
        rows = llmbar.result_rows(items, *_winners(name, len(items), got, scoring),
                                  completions_noswap=[got[llmbar_id(name, i, False)].text for i in range(len(items))],
                                  completions_swap=[got[llmbar_id(name, i, True)].text for i in range(len(items))],
                                  verdicts=llmbar.VERDICTS_PROBS if scoring == "expected" else llmbar.VERDICTS_PARSED)
        base = store.join(folder, "llmbar", name)
        res.add(f"llmbar_{name}_results", store.join(base, "result.json"),
                write_json(store.join(base, "result.json"), rows))
        res.add(f"llmbar_{name}_statistics", store.join(base, "statistics.json"),
                write_json(store.join(base, "statistics.json"), llmbar.statistics(rows)))
        per_set[name] = _figures(llmbar.score_results(rows), rows, seed)
        pooled += rows
    res.counts["llmbar_pairs"] = len(pooled)
    res.stats["llmbar"] = {"sets": per_set, "pooled": _figures(llmbar.score_results(pooled), pooled, seed),
                           "judge": judge, "verdicts": "parsed (LLMBar's rule)" if scoring == "parse" else
                           "P(a) vs P(b) after 'Output (' (ours, not LLMBar's parse rule)"}


def _winners(name: str, count: int, got: dict[str, EvalAnswer], scoring: str) -> tuple[list, list]:
    """Each order's winner as output_1 / output_2 (None: unparsed or unanswered)."""
    from metareward.evals import llmbar

    out: tuple[list, list] = ([], [])
    for i in range(count):
        for swap, winners in ((False, out[0]), (True, out[1])):
            a = got[llmbar_id(name, i, swap)]
            if scoring == "expected":
                raw = llmbar.verdict_from_probs(*a.probs) if a.probs else None
            else:
                raw = llmbar.parse_verdict(a.text)
            winners.append(llmbar.winner(raw, swap))
    return out


def _figures(s: dict, rows: list[dict], seed: int) -> dict:
    """The scorer's figures without LLMBar's formatted strings, and accuracy's interval over pairs."""
    correct = []
    for r in rows:
        result = r["results"][0]
        label = str(r["label"])
        correct.append(((result["swap = False"]["winner"] == label) + (result["swap = True"]["winner"] == label)) / 2)
    return {**{k: v for k, v in s.items() if k != "statistics"}, "accuracy_ci95": bootstrap(correct, seed=seed)}
