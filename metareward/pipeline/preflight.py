"""Checks of every file a config names, run before a run touches the store or starts Prefect.

A bad prompt file, a missing model folder or a benchmark file that is not UTF-8 would otherwise surface minutes
later inside a stage (after Prefect start-up, and once per retry). Here each is one line naming the config field
and the file (and the line where there is one)::

    >>> from metareward.config import load_config
    >>> check(load_config("smoke", ["prompts.path=missing.jsonl"]))
    Traceback (most recent call last):
    metareward.inputs.prompt_sets.PromptFileError: prompts.path missing.jsonl: no such file

Only cheap checks: files are read and parsed, models are not loaded (a hub id is left to the download).
"""

from __future__ import annotations

import json
from pathlib import Path

from metareward.config import RunConfig
from metareward.engines.models import ModelNotFound
from metareward.inputs.prompt_sets import PromptFileError


def check(cfg: RunConfig) -> None:
    """Raise PromptFileError / ModelNotFound naming the field of the first bad input file."""
    _prompts(cfg)
    check_model("model.path", cfg.model.path)
    if cfg.prompt_pool.enabled:
        check_model("prompt_pool.model_path", cfg.prompt_pool.model_path)
    for name, path in sorted(cfg.prompts.decontam.benchmarks.items()):
        _utf8_file(f"prompts.decontam.benchmarks.{name}", path)
    if cfg.eft.enabled and cfg.eft.path is not None:
        from metareward.inputs.eft import read_ranked_file
        from metareward.inputs.prompt_sources import shipped_path

        _utf8_file("eft.path", shipped_path(cfg.eft.path))
        read_ranked_file(cfg.eft.path, cfg.eft.lang)
    for field, path in _eval_files(cfg):
        _utf8_file(field, path)


def _prompts(cfg: RunConfig) -> None:
    from metareward.inputs import prompt_sources

    p = cfg.prompts
    if p.dataset is not None:
        d = Path(p.dataset).expanduser()
        if not d.exists() and (p.dataset.startswith((".", "/", "~")) or d.suffix in prompt_sources.DATA_FILE_BUILDERS):
            raise PromptFileError(f"prompts.dataset {p.dataset}: no such file or folder")
        return  # a dataset is read by the prompts stage (a hub id may download)
    if p.path is not None:
        _utf8_file("prompts.path", prompt_sources.shipped_path(p.path), PromptFileError)
    rows, where = prompt_sources.read_source(p)
    if p.eval_count >= len(rows):
        raise PromptFileError(f"{where}: prompts.eval_count={p.eval_count} leaves no training prompt of {len(rows)}")


def check_model(field: str, path: str | None) -> None:
    """The seed model: the embedded wheel must be installed; a local folder must hold a readable config.json."""
    if path is None:
        from metareward.engines.models import embedded_gguf

        embedded_gguf()
        return
    p = Path(path).expanduser()
    if not p.exists():
        if "://" in path or path.startswith((".", "/", "~")) or path.count("/") > 1:
            raise ModelNotFound(f"{field} {path}: no such folder")
        return  # a hub id ("org/name"): the user opted into downloading
    if not p.is_dir():
        raise ModelNotFound(f"{field} {path}: not a folder (expected a Hugging Face model folder)")
    cfg_file = p / "config.json"
    if not cfg_file.is_file():
        raise ModelNotFound(f"{field} {path}: folder has no config.json")
    try:
        json.loads(cfg_file.read_bytes().decode("utf-8"))
    except PermissionError:
        raise ModelNotFound(f"{field} {cfg_file}: not readable (permission denied)") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        line = f" line {e.lineno}:" if isinstance(e, json.JSONDecodeError) else ""
        raise ModelNotFound(f"{field} {cfg_file}:{line} unreadable config.json ({type(e).__name__})") from None


def _utf8_file(field: str, path: str, error: type[Exception] = PromptFileError) -> None:
    if path.startswith("hf:"):
        return
    p = Path(path).expanduser()
    if not p.is_file():
        raise error(f"{field} {path}: no such file")
    try:
        data = p.read_bytes()
    except PermissionError:
        raise error(f"{field} {path}: not readable (permission denied)") from None
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise error(f"{field} {path}: line {line}: not UTF-8 text") from None


def _eval_files(cfg: RunConfig) -> list[tuple[str, str]]:
    e = cfg.eval
    named = [("eval.judge_quality.labels", e.judge_quality.labels)]
    if e.enabled and e.mt_bench.enabled:
        named += [("eval.mt_bench.questions", e.mt_bench.questions),
                  ("eval.mt_bench.reference_answers", e.mt_bench.reference_answers)]
    if e.enabled and e.alpaca_eval.enabled:
        named += [("eval.alpaca_eval.references", e.alpaca_eval.references),
                  ("eval.alpaca_eval.difficulty_path", e.alpaca_eval.difficulty_path),
                  ("eval.alpaca_eval.gamed_path", e.alpaca_eval.gamed_path)]
    if e.enabled and e.arena_hard.enabled:
        named += [("eval.arena_hard.questions", e.arena_hard.questions),
                  ("eval.arena_hard.baseline_answers", e.arena_hard.baseline_answers)]
    return [(f, p) for f, p in named if p is not None]
