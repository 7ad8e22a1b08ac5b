import json

import pytest

from metareward.inputs import prompt_sources
from metareward.config import PromptsSection
from metareward.inputs.prompt_sets import PromptFileError
from metareward.records import Prompt


def P(i, text):
    return Prompt(id=f"p{i}", prompt=text)


def test_clean_counts_every_step(tmp_path):
    """8 prompts: one exact duplicate (case/space), one too short, one too long, one near-duplicate
    (J = 12/15 = 0.8, see test_dedupe), one sharing a 6-gram with a benchmark question -> 3 kept."""
    bench = tmp_path / "mt.jsonl"
    bench.write_text(json.dumps({"turns": ["Compose an engaging travel blog post about a recent trip to Hawaii"]}))
    cfg = PromptsSection(min_chars=10, max_chars=60, near_duplicate_threshold=0.7,
                         decontam={"benchmarks": {"mt_bench": str(bench)}, "ngram": 6})
    rows = [P(0, "Why do cats purr"), P(1, "why  do cats PURR"), P(2, "Hi there"), P(3, "x" * 61),
            P(4, "Why do cats purr, so?"), P(5, "Please compose an engaging travel blog post about Rome"),
            P(6, "Name three rivers in Africa"), P(7, "Explain how tides work")]
    kept, counts = prompt_sources.clean(rows, cfg)
    assert [p.id for p in kept] == ["p0", "p6", "p7"]
    assert counts == {"duplicates_removed": 1, "too_short": 1, "too_long": 1, "near_duplicates_removed": 1,
                      "duplicates_of_reference": 0, "contaminated": 1, "contaminated_mt_bench": 1}


def test_clean_against_a_reference_set():
    """Generated prompts that repeat a seed exactly or nearly are dropped and counted as such."""
    cfg = PromptsSection()
    seeds = [P(0, "Why do cats purr")]
    kept, counts = prompt_sources.clean([P(1, "why do cats purr"), P(2, "Why do cats purr so?"),
                                         P(3, "Name three rivers in Africa")], cfg, against=seeds)
    assert [p.id for p in kept] == ["p3"] and counts["duplicates_of_reference"] == 2


def test_hf_dataset_source_with_configured_columns(tmp_path):
    from datasets import Dataset, DatasetDict

    folder = tmp_path / "ds"
    DatasetDict({"train": Dataset.from_dict({"q": ["Why is the sky blue?", "Name a bird."], "qid": [7, 8]}),
                 "test": Dataset.from_dict({"q": ["Held out?"], "qid": [9]})}).save_to_disk(str(folder))
    cfg = PromptsSection(dataset=str(folder), split="train", column="q", id_column="qid")
    rows, where = prompt_sources.read_source(cfg)
    assert [(p.id, p.prompt) for p in rows] == [("7", "Why is the sky blue?"), ("8", "Name a bird.")]
    assert where == str(folder)
    with pytest.raises(PromptFileError, match="no column 'text'"):
        prompt_sources.read_source(PromptsSection(dataset=str(folder), column="text"))
    with pytest.raises(PromptFileError, match="no split 'dev'"):
        prompt_sources.read_source(PromptsSection(dataset=str(folder), split="dev", column="q"))


def test_hf_dataset_bad_row_is_named(tmp_path):
    from datasets import Dataset

    folder = tmp_path / "ds"
    Dataset.from_dict({"prompt": ["fine prompt", "  "]}).save_to_disk(str(folder))
    with pytest.raises(PromptFileError, match=r"row 1: column 'prompt' is not a non-empty string"):
        prompt_sources.read_source(PromptsSection(dataset=str(folder)))


def test_path_and_dataset_are_exclusive():
    with pytest.raises(ValueError, match="not both"):
        PromptsSection(path="a.jsonl", dataset="b")


def test_shipped_data_paths():
    rows, where = prompt_sources.read_source(PromptsSection(path="data:seed_prompts.jsonl"))
    assert len(rows) == 12 and where == "data:seed_prompts.jsonl"
    with pytest.raises(PromptFileError, match="no such file shipped"):
        prompt_sources.read_source(PromptsSection(path="data:nope.jsonl"))


def test_source_digest_follows_the_benchmark_files_content(tmp_path):
    bench = tmp_path / "q.jsonl"
    bench.write_text('{"turns": ["a question"]}\n')
    cfg = PromptsSection(decontam={"benchmarks": {"b": str(bench)}})
    rows = [P(0, "Why do cats purr")]
    before = prompt_sources.source_digest(rows, cfg)
    bench.write_text('{"turns": ["another question"]}\n')
    assert prompt_sources.source_digest(rows, cfg) != before
