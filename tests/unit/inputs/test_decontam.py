import json

import pytest

from metareward.inputs import decontam


@pytest.fixture
def bench_files(tmp_path):
    """Small stand-ins for the three question sets, in each benchmark's own format."""
    alpaca = tmp_path / "alpaca_eval.json"  # AlpacaEval: a JSON list with 'instruction'
    alpaca.write_text(json.dumps([{"instruction": "Write a haiku about the ocean at night", "dataset": "x"},
                                  {"instruction": "What is the capital of France?"}]))
    arena = tmp_path / "arena_question.jsonl"  # Arena-Hard v0.1: turns of {'content'}
    arena.write_text(json.dumps({"question_id": "a1", "turns": [{"content": "Implement a binary search tree in "
                                                                           "Rust with insert and delete"}]}) + "\n")
    mt = tmp_path / "mt_question.jsonl"  # MT-Bench: turns of strings; the second turn counts too
    mt.write_text(json.dumps({"question_id": 81, "category": "writing", "turns": [
        "Compose an engaging travel blog post about a recent trip to Hawaii",
        "Rewrite your previous response starting every sentence with the letter A"]}) + "\n")
    return {"alpaca_eval": str(alpaca), "arena_hard": str(arena), "mt_bench": str(mt)}


def test_ngram_overlap_worked_by_hand():
    """n=4: the question's 4-grams are 'write a haiku about', 'a haiku about the', 'haiku about the ocean',
    'about the ocean at', 'the ocean at night'. 'Please write a haiku about the sea' shares the first;
    'Write a poem about the ocean' shares none."""
    index = decontam.NgramIndex.build(["Write a haiku about the ocean at night"], n=4)
    assert len(index.grams) == 5
    assert index.overlaps("Please write a haiku about the sea")
    assert not index.overlaps("Write a poem about the ocean")


def test_a_short_question_is_matched_whole_inside_a_prompt():
    index = decontam.NgramIndex.build(["What is the capital of France?"], n=8)  # 6 words < 8
    assert index.overlaps("Quick one: what is the capital of France")
    assert not index.overlaps("What is the capital of Spain?")


def test_contaminated_prompts_removed_and_counted_per_benchmark(bench_files):
    indexes = decontam.load_indexes(bench_files, n=6)
    prompts = [
        "Write a haiku about the ocean at night, please",           # alpaca (6-gram)
        "what is the capital of france",                             # alpaca (short question, whole)
        "Can you implement a binary search tree in Rust with insert?",  # arena: 'implement a binary search tree in'
        "Rewrite your previous response starting every sentence with the letter B",  # mt_bench, turn 2
        "Write a limerick about a cat",                              # clean
        "Explain how tides work",                                    # clean
    ]
    keep, counts = decontam.decontaminate(prompts, indexes)
    assert keep == [4, 5]
    assert counts == {"alpaca_eval": 2, "arena_hard": 1, "mt_bench": 1, "total": 4}


def test_bad_question_files_are_named(tmp_path):
    f = tmp_path / "q.jsonl"
    f.write_text('{"turns": ["ok"]}\n{"answer": 3}\n')
    with pytest.raises(decontam.BenchmarkFileError, match=r"q.jsonl: line 2: expected a string or an object"):
        decontam.read_questions(str(f))
    f.write_text('{"turns": ["ok"]}\n{oops\n')
    with pytest.raises(decontam.BenchmarkFileError, match=r"q.jsonl: line 2: invalid JSON"):
        decontam.read_questions(str(f))
    with pytest.raises(decontam.BenchmarkFileError, match="no such benchmark question file"):
        decontam.read_questions(str(tmp_path / "missing.json"))
