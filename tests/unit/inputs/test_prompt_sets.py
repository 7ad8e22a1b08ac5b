import pytest

from metareward.inputs import prompt_sets
from metareward.records import Prompt


def P(i, text=None):
    return Prompt(id=f"p{i}", prompt=text or f"prompt {i}")


def test_shipped_smoke_prompts():
    rows, name = prompt_sets.read_prompt_file(None)
    assert len(rows) == 24 and name == "smoke_prompts.jsonl"


def test_dedupe_normalises_whitespace_and_case():
    rows, dropped = prompt_sets.dedupe([P(1, "Hello  world"), P(2, "hello world"), P(3, "other"), P(1, "x")])
    assert [r.id for r in rows] == ["p1", "p3"] and dropped == 2


def test_bad_lines_are_named(tmp_path):
    f = tmp_path / "p.jsonl"
    f.write_text('{"prompt": "ok"}\n{"prompt": ""}\n')
    with pytest.raises(prompt_sets.PromptFileError, match=r"p.jsonl: line 2: expected an object"):
        prompt_sets.read_prompt_file(str(f))
    f.write_bytes(b'{"prompt": "ok"}\n{"prompt": "\xff"}\n')
    with pytest.raises(prompt_sets.PromptFileError, match=r"line 2: not UTF-8"):
        prompt_sets.read_prompt_file(str(f))
    f.write_text("")
    with pytest.raises(prompt_sets.PromptFileError, match="no prompts"):
        prompt_sets.read_prompt_file(str(f))


def test_iterations_take_disjoint_slices():
    """10 prompts, 3 per iteration: iterations 1-3 use 9 distinct prompts; iteration 4 wraps around."""
    train = [P(i) for i in range(10)]
    picked = [prompt_sets.for_iteration(train, t, 3, seed=1) for t in (1, 2, 3)]
    ids = [p.id for batch in picked for p in batch]
    assert len(ids) == 9 and len(set(ids)) == 9
    assert prompt_sets.for_iteration(train, 1, 3, seed=1) == picked[0]  # seeded
    assert prompt_sets.for_iteration(train, 1, None, seed=1) == train


def test_split_eval_holds_out_the_tail():
    train, held = prompt_sets.split_eval([P(i) for i in range(5)], 2)
    assert [p.id for p in held] == ["p3", "p4"] and len(train) == 3
    with pytest.raises(prompt_sets.PromptFileError):
        prompt_sets.split_eval([P(1)], 1)


def test_reused_count_matches_the_slices():
    """10 prompts, 3 per iteration: iterations 1-3 reuse nothing; iteration 4 (positions 9, 10, 11) reuses 2
    (it wraps to positions 0 and 1); iteration 5 reuses all 3. Taking everything every time reuses it all."""
    train = [P(i) for i in range(10)]
    seen, counts = set(), []
    for t in range(1, 6):
        ids = {p.id for p in prompt_sets.for_iteration(train, t, 3, seed=1)}
        counts.append(len(ids & seen))
        seen |= ids
    assert counts == [0, 0, 0, 2, 3]
    assert [prompt_sets.reused_count(10, t, 3) for t in range(1, 6)] == counts
    assert [prompt_sets.reused_count(10, t, None) for t in (1, 2)] == [0, 10]
