import pytest

from metareward.inputs import prompt_pool
from metareward.records import Prompt


def test_render_wraps_each_example_in_task_tags():
    text = prompt_pool.render(["Why do cats purr?", "Name a bird."])
    assert text.startswith("Come up with a series of tasks and questions.")
    assert text.endswith("chatbot.\n<task>Why do cats purr?</task>\n<task>Name a bird.</task>")


def test_parse_tags_drops_an_unclosed_last_task():
    out = "Sure!\n<task>How do bees make honey?</task>\n<task> Name three uses of baking soda. </task>\n<task>What is"
    assert prompt_pool.parse_tasks(out) == ["How do bees make honey?", "Name three uses of baking soda."]


def test_parse_lines_takes_untagged_lines_without_list_markers():
    out = "<task>How do bees make honey?</task>\n1. Name a river in Peru.\n- Task 3: Why is snow white?\n\n<task>cut"
    assert prompt_pool.parse_tasks(out, "lines") == ["How do bees make honey?", "Name a river in Peru.",
                                                     "Why is snow white?"]
    with pytest.raises(ValueError):
        prompt_pool.parse_tasks(out, "json")


def test_draw_examples_is_seeded_and_distinct_within_a_request():
    seeds = [Prompt(id=f"s{i}", prompt=f"seed {i}") for i in range(10)]
    a = prompt_pool.draw_examples(seeds, requests=3, k=8, seed=0)
    assert a == prompt_pool.draw_examples(seeds, requests=3, k=8, seed=0)
    assert all(len(s) == 8 and len({p.id for p in s}) == 8 for s in a)
    assert [len(s) for s in prompt_pool.draw_examples(seeds[:3], requests=2, k=8, seed=0)] == [3, 3]
    with pytest.raises(ValueError, match="no seed prompts"):
        prompt_pool.draw_examples([], 1, 8, 0)


def test_new_prompts_get_generation_order_ids():
    assert [p.id for p in prompt_pool.new_prompts(["a", "b"])] == ["g00000", "g00001"]
