"""AlpacaEval 2: model outputs, pairwise annotation against reference outputs, win rate and LC win rate.

Formats (alpaca_eval's own):

- ``model_outputs.json``: ``[{"instruction", "output", "generator", "dataset"?}, ...]`` (reference outputs alike);
- ``annotations.json``: ``[{"instruction", "output_1", "generator_1", "output_2", "generator_2", "annotator",
  "preference", ...}, ...]`` where output_1 is the reference (baseline) and output_2 the evaluated model.

A preference is in [1, 2]: 1 = output_1 (baseline) wins, 2 = output_2 (model) wins, 1.5 (or the legacy 0) a
draw. The reference annotator ``weighted_alpaca_eval_gpt4_turbo`` asks GPT-4 Turbo for one token, ``m``
(output_1) or ``M`` (output_2), and sets preference = 2 - P(m) / (P(m) + P(M)) from the top log-probabilities.
A local judge does the same with the engine's probabilities for ``m`` and ``M``.

``get_winrate`` reproduces alpaca_eval's ``metrics/winrate.py`` (``AbsoluteScoringRule.describe_head2head``):

    >>> r = get_winrate([2, 2, 1, 1.5])          # prefs - 1 = 1, 1, 0, 0.5
    >>> r["win_rate"], r["n_wins"], r["n_wins_base"], r["n_draws"], r["n_total"]
    (62.5, 2, 1, 1, 4)
"""

from __future__ import annotations

import hashlib
import math
import sys
from contextlib import contextmanager

import numpy as np

from metareward.evals.io import EvalFileError, need, read_json_list, write_json

# alpaca_eval evaluators_configs/alpaca_eval_clf_gpt4_turbo/alpaca_eval_clf.txt: the prompt of the reference
# annotator (weighted_alpaca_eval_gpt4_turbo), as a system and a user message.
SYSTEM_PROMPT = ("You are a highly efficient assistant, who evaluates and selects the best large language model (LLMs) "
                 "based on the quality of their responses to a given instruction. This process will be used to "
                 "create a leaderboard reflecting the most accurate and human-preferred answers.")
USER_TEMPLATE = """I require a leaderboard for various large language models. I'll provide you with prompts given to these models and their corresponding outputs. Your task is to assess these responses, and select the model that produces the best output from a human perspective.

## Instruction

{{
    "instruction": \"\"\"{instruction}\"\"\",
}}

## Model Outputs

Here are the unordered outputs from the models. Each output is associated with a specific model, identified by a unique model identifier.

{{
    {{
        "model_identifier": "m",
        "output": \"\"\"{output_1}\"\"\"
    }},
    {{
        "model_identifier": "M",
        "output": \"\"\"{output_2}\"\"\"
    }}
}}

## Task

Evaluate the models based on the quality and relevance of their outputs, and select the model that generated the best output. Answer by providing the model identifier of the best model. We will use your output as the name of the best model, so make sure your output only contains one of the following model identifiers and nothing else (no quotes, no spaces, no new lines, ...): m or M.

## Best Model Identifier"""
CHOICES = ["m", "M"]  # m names output_1, M names output_2


def render(instruction: str, output_1: str, output_2: str) -> tuple[str, str]:
    """(system, user) messages of the reference annotator's prompt."""
    return SYSTEM_PROMPT, USER_TEMPLATE.format(instruction=instruction, output_1=output_1, output_2=output_2)


def preference_from_probs(p_m: float | None) -> float:
    """``logprob_parser(is_binarize=False)``: 2 - P(m)/(P(m)+P(M)); NaN when neither token was seen."""
    return float("nan") if p_m is None or math.isnan(p_m) else 2.0 - p_m


def is_swapped(instruction: str, seed: int) -> bool:
    """Whether to show the model's output first for this instruction (alpaca_eval randomises the order to cancel
    position bias, then maps the preference back); seeded and per instruction, so reruns agree."""
    return int(hashlib.sha256(f"{seed}|{instruction}".encode()).hexdigest()[:8], 16) % 2 == 1


def unswap(preference: float) -> float:
    """A preference given with the outputs shown swapped, expressed for the original order: 3 - p."""
    return 3.0 - preference


# --------------------------------------------------------------------------------------------- win rate


def _prefs(preferences) -> np.ndarray:
    """alpaca_eval's preprocessing: None -> NaN, the legacy draw 0 -> 1.5, as floats."""
    arr = np.array([np.nan if p is None else float(p) for p in preferences], dtype=float)
    arr[arr == 0.0] = 1.5
    return arr


def get_winrate(preferences) -> dict:
    """alpaca_eval ``get_winrate``: win_rate = mean(p - 1) * 100, standard_error = sem(p - 1) * 100 (ddof=1),
    counts of wins (p - 1 > 0.5), base wins (< 0.5), draws (p == 1.5, counted before dropping invalid rows) and
    the valid total; rows outside [1, 2] (NaN included) are dropped. Also ``discrete_win_rate``."""
    arr = _prefs(preferences)
    n_draws = int((arr == 1.5).sum())
    valid = arr[(arr >= 1.0) & (arr <= 2.0)] - 1.0
    n = len(valid)
    return {
        "win_rate": float(valid.mean() * 100) if n else float("nan"),
        "standard_error": float(valid.std(ddof=1) / math.sqrt(n) * 100) if n > 1 else float("nan"),
        "n_wins": int((valid > 0.5).sum()), "n_wins_base": int((valid < 0.5).sum()), "n_draws": n_draws,
        "n_total": n, "discrete_win_rate": _discrete_win_rate(preferences),
    }


def _discrete_win_rate(preferences) -> float:
    """``ZeroOneScoringRule``: 1.5 -> draw, others rounded half-to-even to 1 or 2, draws count half."""
    arr = _prefs(preferences)
    arr = np.where(arr == 1.5, 1.5, np.round(arr))  # numpy rounds half to even, like pandas' Series.round
    valid = arr[(arr >= 1.0) & (arr <= 2.0)] - 1.0
    return float(valid.mean() * 100) if len(valid) else float("nan")


# --------------------------------------------------------------------------------------------- length control


def std_delta_len(output_1: list[str], output_2: list[str]) -> np.ndarray:
    """(len(output_1) - len(output_2)) / its sample standard deviation, in characters, as alpaca_eval's GLM."""
    d = np.array([len(a) - len(b) for a, b in zip(output_1, output_2)], dtype=float)
    sd = d.std(ddof=1) if len(d) > 1 else 0.0
    return d / sd if sd > 0 else np.zeros_like(d)


def _fit_logistic(X: np.ndarray, y: np.ndarray, l2: float, iters: int = 50) -> np.ndarray:
    """argmin_w sum [-y log s(Xw) - (1-y) log(1-s(Xw))] + l2/2 |w|^2 with soft labels y in [0, 1] (Newton)."""
    w = np.zeros(X.shape[1])
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-(X @ w)))
        grad = X.T @ (p - y) + l2 * w
        H = X.T @ (X * (p * (1 - p))[:, None]) + l2 * np.eye(len(w))
        step = np.linalg.solve(H, grad)
        w -= step
        if np.max(np.abs(step)) < 1e-12:
            break
    return w


def lc_win_rate_approx(annotations: list[dict], l2: float = 1e-3) -> float:
    """An APPROXIMATION of the length-controlled win rate, for when alpaca_eval or its data files are missing.

    Fits preference - 1 ~ sigmoid(b * tanh(std_delta_len) + c) on these annotations alone and reports
    sigmoid(c) * 100, the predicted win rate at equal length. alpaca_eval's GLM also has an instruction
    difficulty term, regularises towards two gamed baselines and cross-validates an L1 penalty; this keeps only
    the length term, so it is not the published metric.
    """
    rows = [a for a in annotations if a.get("preference") is not None and 1 <= _prefs([a["preference"]])[0] <= 2]
    if len(rows) < 2:
        return float("nan")
    y = _prefs([a["preference"] for a in rows]) - 1.0
    x = np.tanh(std_delta_len([a["output_1"] for a in rows], [a["output_2"] for a in rows]))
    w = _fit_logistic(np.column_stack([x, np.ones_like(x)]), y, l2)
    return float(100.0 / (1.0 + math.exp(-w[1])))


@contextmanager
def _local_hub_files(module, files: dict[str, str]):
    """Make ``module.hf_hub_download`` return local paths for the named files, and fail for any other."""
    original = module.hf_hub_download

    def local(repo_id=None, filename=None, **_):
        if filename not in files:
            raise FileNotFoundError(f"alpaca_eval asked for {filename!r}; only {sorted(files)} are given locally")
        return files[filename]

    module.hf_hub_download = local
    try:
        yield
    finally:
        module.hf_hub_download = original


def lc_win_rate_official(annotations: list[dict], difficulty_path: str, gamed_path: str) -> dict:
    """alpaca_eval's own ``get_length_controlled_winrate`` (GLM ``length_controlled_v1``), with its two data files
    (``instruction_difficulty.csv``, ``df_gamed.csv``) read from local paths instead of the HF hub.

    Needs ``pip install alpaca-eval`` (it brings scikit-learn and patsy); raises ImportError otherwise. The
    annotations must be all 805 AlpacaEval rows in the dataset's order: the GLM looks up each row's difficulty
    by its position.
    """
    import pandas as pd

    mod = sys.modules.get("alpaca_eval.metrics.glm_winrate")
    if mod is None:
        import importlib

        mod = importlib.import_module("alpaca_eval.metrics.glm_winrate")
    files = {"instruction_difficulty.csv": difficulty_path, "df_gamed.csv": gamed_path}
    with _local_hub_files(mod, files):
        out = mod.get_length_controlled_winrate(pd.DataFrame(annotations), save_weights_dir=None,
                                                is_add_glm_preference_inplace=False)
    return {k: (v.item() if hasattr(v, "item") else v) for k, v in out.items()}


def evaluate(annotations: list[dict], difficulty_path: str | None = None, gamed_path: str | None = None) -> dict:
    """Win rate, standard error and counts; ``lc_win_rate`` through alpaca_eval's GLM when it is installed and
    both data files are given, else ``lc_win_rate_approx`` with ``lc_note`` saying why."""
    out = get_winrate([a.get("preference") for a in annotations])
    out["avg_length"] = int(np.mean([len(a["output_2"]) for a in annotations])) if annotations else 0
    if difficulty_path and gamed_path:
        try:
            official = lc_win_rate_official(annotations, difficulty_path, gamed_path)
            out["lc_win_rate"] = float(official["length_controlled_winrate"])
            return out
        except ImportError:
            note = "alpaca_eval is not installed (pip install alpaca-eval)"
    else:
        note = "alpaca_eval's instruction_difficulty.csv / df_gamed.csv not given"
    out["lc_win_rate_approx"] = lc_win_rate_approx(annotations)
    out["lc_note"] = f"approximation (length term only, not the published metric): {note}"
    return out


# --------------------------------------------------------------------------------------------- files


def read_outputs(path: str) -> list[dict]:
    """``model_outputs.json`` (or reference outputs): a list of {instruction, output, generator, ...}."""
    rows = []
    for i, row in read_json_list(path):
        need(row, "instruction", path, i, str, unit="entry")
        need(row, "output", path, i, str, unit="entry")
        rows.append(row)
    return rows


def write_outputs(path: str, instructions: list[str], outputs: list[str], generator: str,
                  dataset: str | None = None) -> str:
    rows = []
    for ins, out in zip(instructions, outputs):
        row = {"instruction": ins, "output": out, "generator": generator}
        if dataset is not None:
            row["dataset"] = dataset
        rows.append(row)
    return write_json(path, rows)


def read_annotations(path: str) -> list[dict]:
    """``annotations.json``; preference may be null (a failed annotation, dropped by the win rate)."""
    rows = []
    for i, row in read_json_list(path):
        for key in ("instruction", "output_1", "output_2"):
            need(row, key, path, i, str, unit="entry")
        p = need(row, "preference", path, i, unit="entry")
        if p is not None and (isinstance(p, bool) or not isinstance(p, (int, float))):
            raise EvalFileError(f"{path}: entry {i}: field 'preference' must be a number or null, got {p!r}")
        rows.append(row)
    gens = {r.get("generator_2") for r in rows}
    if len(gens) > 1:
        raise EvalFileError(f"{path}: annotations of several models ({sorted(map(str, gens))}); give one model's file")
    return rows


def annotation_row(instruction: str, output_1: str, generator_1: str, output_2: str, generator_2: str,
                   annotator: str, preference: float | None, raw_completion=None) -> dict:
    pref = None if preference is None or math.isnan(preference) else preference
    return {"instruction": instruction, "output_1": output_1, "generator_1": generator_1, "dataset": "metareward",
            "output_2": output_2, "generator_2": generator_2, "annotator": annotator, "preference": pref,
            "raw_completion": raw_completion}


def write_annotations(path: str, rows: list[dict]) -> str:
    return write_json(path, rows)
