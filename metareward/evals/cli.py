"""``metareward eval ...``: score the official harnesses' files; each command prints one JSON object.

    metareward eval mt-bench --judgments data/mt_bench/model_judgment/gpt-4_single.jsonl --questions question.jsonl
    metareward eval alpaca --annotations results/my-model/weighted_alpaca_eval_gpt4_turbo/annotations.json
    metareward eval agreement --labels human.jsonl --verdicts judge.jsonl
    metareward eval arena-hard --judgments data/arena-hard-v0.1/model_judgment/gpt-4-1106-preview
    metareward eval import-human human_judgments.json labels.jsonl
    metareward eval llmbar --results Dataset/LLMBar/Natural/evaluators/GPT-4/Vanilla/result.json
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Optional

import typer

from metareward.evals.io import EvalFileError, iter_files

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Score benchmark files exactly as the official harnesses do.")


def _clean(obj):
    """JSON has no NaN: a metric that cannot be computed is null."""
    if isinstance(obj, float) and (math.isnan(obj) or math.isinf(obj)):
        return None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_clean(v) for v in obj]
    return obj


def _print(obj: dict) -> None:
    typer.echo(json.dumps(_clean(obj), sort_keys=False))


@app.command("mt-bench")
def mt_bench(
    judgments: Annotated[str, typer.Option(help="FastChat model_judgment/<judge>_single.jsonl")],
    questions: Annotated[Optional[str], typer.Option(help="question.jsonl, for per-category scores")] = None,
    model: Annotated[Optional[str], typer.Option(help="The model to score when the file holds several")] = None,
) -> None:
    """score (both turns), turn_1, turn_2, n, n_failed and per-category means, as FastChat's show_result.py."""
    from metareward.evals import mtbench

    rows = mtbench.read_judgments(judgments)
    try:
        rows = mtbench.select_model(rows, model)
        cats = {q.question_id: q.category for q in mtbench.read_questions(questions)} if questions else None
        _print(mtbench.score(rows, cats))
    except ValueError as e:
        if isinstance(e, EvalFileError):
            raise
        raise EvalFileError(f"{judgments}: {e}") from None


@app.command("alpaca")
def alpaca_cmd(
    annotations: Annotated[str, typer.Option(help="alpaca_eval annotations.json")],
    difficulty: Annotated[Optional[str], typer.Option(help="instruction_difficulty.csv (for the LC win rate)")] = None,
    gamed: Annotated[Optional[str], typer.Option(help="df_gamed.csv (for the LC win rate)")] = None,
) -> None:
    """win_rate, standard_error, n_wins, n_wins_base, n_draws, n_total; lc_win_rate when computable."""
    from metareward.evals import alpaca

    _print(alpaca.evaluate(alpaca.read_annotations(annotations), difficulty, gamed))


@app.command("agreement")
def agreement_cmd(
    labels: Annotated[str, typer.Option(help="JSONL {id, label} (a|b|tie), e.g. human labels")],
    verdicts: Annotated[str, typer.Option(help="JSONL {id, verdict, verdict_swapped?, score_a?, score_b?}")],
) -> None:
    """agreement, agreement_without_ties, n, n_ties; swap consistency and rank correlations when present."""
    from metareward.evals import agreement

    _print(agreement.evaluate(agreement.read_labels(labels), agreement.read_verdicts(verdicts)))


@app.command("arena-hard")
def arena_hard_cmd(
    judgments: Annotated[str, typer.Option(help="model_judgment/<judge>/<model>.jsonl, or that folder")],
    model: Annotated[Optional[str], typer.Option(help="The model to report when there are several")] = None,
    rounds: Annotated[int, typer.Option(help="Bootstrap rounds")] = 100,
    seed: Annotated[int, typer.Option(help="np.random.seed before bootstrapping")] = 42,
) -> None:
    """score, ci_low, ci_high (win rate vs gpt-4-0314 in %), as arena-hard-auto v0.1's show_result.py."""
    from metareward.evals import arena_hard

    files = list(iter_files(judgments, ".jsonl")) if Path(judgments).is_dir() else [judgments]
    if not files:
        raise EvalFileError(f"{judgments}: no .jsonl judgment files")
    rows = [r for f in files for r in arena_hard.read_judgments(f)]
    try:
        scores = arena_hard.score(rows, rounds=rounds, seed=seed)
    except ValueError as e:
        raise EvalFileError(f"{judgments}: {e}") from None
    if model is None and len(scores) != 1:
        raise EvalFileError(f"{judgments}: judgments of {len(scores)} models ({', '.join(scores)}); pick one with "
                            "--model")
    name = model or next(iter(scores))
    if name not in scores:
        raise EvalFileError(f"{judgments}: no battles of model {name!r}; models: {', '.join(scores)}")
    _print({"model": name, **scores[name]})


@app.command("ifeval")
def ifeval_cmd(
    prompts: Annotated[str, typer.Option(help="IFEval input_data.jsonl, or a hub id such as google/IFEval")],
    responses: Annotated[str, typer.Option(help="JSONL {prompt, response}, as the official evaluator reads it")],
    out: Annotated[Optional[str], typer.Option(help="Folder for eval_results_strict.jsonl, eval_results_loose.jsonl")]
    = None,
    limit: Annotated[Optional[int], typer.Option(min=1, help="Score only the first N prompts")] = None,
) -> None:
    """prompt_level/inst_level strict/loose accuracy, counts, per category and instruction, as the official tool."""
    from metareward.evals import ifeval

    rows, answers = ifeval.read_prompts(prompts, limit), ifeval.read_responses(responses)
    try:
        strict, loose = ifeval.evaluate(rows, answers)
    except EvalFileError as e:  # prompts without a response: say which file lacks them
        raise EvalFileError(f"{responses}: {e}") from None
    summary = ifeval.summarize(strict, loose)
    if out is not None:
        folder = out if "://" in out else str(Path(out).resolve())
        summary["files"] = ifeval.write_results(folder, strict, loose)
    _print(summary)


@app.command("import-human")
def import_human(
    source: Annotated[str, typer.Argument(help="MT-Bench human judgments (human_judgments.json or JSONL)")],
    output: Annotated[str, typer.Argument(help="Label JSONL to write {id, prompt, response_a, response_b, label}")],
) -> None:
    """Convert the MT-Bench human-judgments format to the label JSONL that `agreement` reads."""
    from metareward.evals import agreement
    from metareward.evals.io import write_jsonl

    rows = agreement.import_mt_bench_human(source)
    write_jsonl(str(Path(output).resolve()), rows)
    _print({"rows": len(rows), "output": output})


@app.command("llmbar")
def llmbar_cmd(
    results: Annotated[str, typer.Option(help="LLMBar result.json: Dataset/LLMBar/<set>/evaluators/<evaluator>/"
                                              "<prompt>/result.json, or one the benchmark stage wrote")],
) -> None:
    """accuracy, agreement, correct_both, n, counts, kappas and LLMBar's statistics.json, as its evaluate.py."""
    from metareward.evals import llmbar

    _print(llmbar.score_results(llmbar.read_results(results)))
