"""Where training prompts come from, and the cleaning every prompt goes through.

Sources (``prompts`` config section): a JSONL file (`prompt_sets.read_prompt_file`) or a Hugging Face dataset
with a configured text column (a ``save_to_disk`` folder, a .parquet/.json/.jsonl/.csv file, or a hub id).

Cleaning, in this order, each step counted for the manifest:

1. exact duplicates (case and whitespace normalised) and repeated ids (`prompt_sets.dedupe`);
2. length: shorter than ``min_chars`` or longer than ``max_chars``;
3. near-duplicates: character-shingle Jaccard >= ``near_duplicate_threshold`` with an earlier prompt
   (`metareward.inputs.dedupe`);
4. benchmark contamination: a word n-gram shared with an AlpacaEval / Arena-Hard / MT-Bench question
   (`metareward.inputs.decontam`).

The same cleaning is applied to generated prompts (`metareward.inputs.prompt_pool`), with the seeds as the
reference set for duplicates.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING

from metareward.inputs import decontam, dedupe, prompt_sets
from metareward.inputs.prompt_sets import PromptFileError
from metareward.records import Prompt

if TYPE_CHECKING:
    from metareward.config import PromptsSection

SHIPPED = "data:"
DATA_FILE_BUILDERS = {".parquet": "parquet", ".json": "json", ".jsonl": "json", ".csv": "csv"}


def shipped_path(path: str | None) -> str | None:
    """``data:<name>`` names a file shipped in ``metareward/data`` (so recipes can point at package data);
    any other value is returned as it is."""
    if path is None or not path.startswith(SHIPPED):
        return path
    from importlib import resources

    res = resources.files("metareward.data") / path[len(SHIPPED):]
    if not res.is_file():
        raise PromptFileError(f"{path}: no such file shipped in metareward/data")
    return str(res)


def read_source(cfg: PromptsSection) -> tuple[list[Prompt], str]:
    """The configured prompts, in source order, and a name for messages and manifests."""
    if cfg.dataset is None:
        rows, where = prompt_sets.read_prompt_file(shipped_path(cfg.path))
        return rows, cfg.path if cfg.path and cfg.path.startswith(SHIPPED) else where
    return read_dataset(cfg.dataset, cfg.split, cfg.column, cfg.id_column), cfg.dataset


def _load(name: str, split: str):
    from datasets import DatasetDict, load_dataset, load_from_disk

    p = Path(name).expanduser()
    if p.is_dir() and any((p / f).is_file() for f in ("dataset_info.json", "state.json", "dataset_dict.json")):
        ds = load_from_disk(str(p))
        if isinstance(ds, DatasetDict):
            if split not in ds:
                raise PromptFileError(f"prompts.dataset {name}: no split {split!r} (splits: {', '.join(ds)})")
            ds = ds[split]
        return ds
    if p.is_file() and p.suffix in DATA_FILE_BUILDERS:
        return load_dataset(DATA_FILE_BUILDERS[p.suffix], data_files=str(p), split="train")
    if p.exists() or name.startswith((".", "/")):
        raise PromptFileError(f"prompts.dataset {name}: not a save_to_disk folder or a "
                              f"{'/'.join(DATA_FILE_BUILDERS)} file")
    return load_dataset(name, split=split)  # a hub id: the user opted into downloading


def read_dataset(name: str, split: str, column: str, id_column: str | None) -> list[Prompt]:
    """Prompts from one column of a Hugging Face dataset; a bad row is named by its index."""
    ds = _load(name, split)
    for col in (column, id_column):
        if col is not None and col not in ds.column_names:
            raise PromptFileError(f"prompts.dataset {name}: no column {col!r} (columns: {', '.join(ds.column_names)})")
    texts = ds[column]
    ids = ds[id_column] if id_column else [f"row{i}" for i in range(len(texts))]
    rows = []
    for i, (pid, text) in enumerate(zip(ids, texts)):
        if not isinstance(text, str) or not text.strip():
            raise PromptFileError(f"prompts.dataset {name}: row {i}: column {column!r} is not a non-empty string")
        rows.append(Prompt(id=str(pid), prompt=text.strip()))
    if not rows:
        raise PromptFileError(f"prompts.dataset {name}: no prompts")
    return rows


def length_filter(prompts: list[Prompt], min_chars: int, max_chars: int | None) -> tuple[list[Prompt], int, int]:
    """(kept, too short, too long)."""
    short = [p for p in prompts if len(p.prompt) < min_chars]
    long = [p for p in prompts if max_chars is not None and len(p.prompt) > max_chars]
    drop = {id(p) for p in short + long}
    return [p for p in prompts if id(p) not in drop], len(short), len(long)


def clean(prompts: list[Prompt], cfg: PromptsSection, against: list[Prompt] = ()) -> tuple[list[Prompt], dict[str, int]]:
    """Steps 1-4 of the module docstring; ``against`` (e.g. the seed prompts) counts as earlier prompts for
    the duplicate tests but is not returned. Counts: duplicates_removed, too_short, too_long,
    near_duplicates_removed, duplicates_of_reference, contaminated[_<benchmark>]."""
    ref_norm = {dedupe.normalize(p.prompt) for p in against}
    unique, exact = prompt_sets.dedupe(prompts)
    of_ref = [p for p in unique if dedupe.normalize(p.prompt) in ref_norm]
    unique = [p for p in unique if dedupe.normalize(p.prompt) not in ref_norm]
    kept, short, long = length_filter(unique, cfg.min_chars, cfg.max_chars)
    near = near_ref = 0
    if cfg.near_duplicate_threshold is not None:
        idx, near, near_ref = dedupe.near_dedupe([p.prompt for p in kept], cfg.near_duplicate_threshold,
                                                 cfg.shingle_chars, against=[p.prompt for p in against])
        kept = [kept[i] for i in idx]
    counts = {"duplicates_removed": exact, "too_short": short, "too_long": long, "near_duplicates_removed": near,
              "duplicates_of_reference": len(of_ref) + near_ref}
    if cfg.decontam.benchmarks:
        indexes = decontam.load_indexes(cfg.decontam.benchmarks, cfg.decontam.ngram)
        idx, hits = decontam.decontaminate([p.prompt for p in kept], indexes)
        kept = [kept[i] for i in idx]
        counts.update({"contaminated": hits.pop("total"), **{f"contaminated_{k}": v for k, v in hits.items()}})
    else:
        counts["contaminated"] = 0
    return kept, counts


def source_digest(rows: list[Prompt], cfg: PromptsSection) -> str:
    """Digest of what the prompt stages read: the source rows and the benchmark question files' bytes, so a
    changed file re-keys the stage even when its path is the same."""
    h = hashlib.sha256("\n".join(p.model_dump_json() for p in rows).encode())
    for name, path in sorted(cfg.decontam.benchmarks.items()):
        p = Path(path).expanduser()
        h.update(f"|{name}=".encode() + (p.read_bytes() if p.is_file() else b"missing"))
    return h.hexdigest()[:16]


def prepare(rows: list[Prompt], cfg: PromptsSection) -> tuple[list[Prompt], list[Prompt], dict[str, int]]:
    """Clean the source prompts, then hold out the last ``eval_count``: (train, held out, cleaning counts)."""
    kept, counts = clean(rows, cfg)
    train, held_out = prompt_sets.split_eval(kept, cfg.eval_count)
    return train, held_out, counts
