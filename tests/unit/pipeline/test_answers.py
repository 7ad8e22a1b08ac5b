"""The answers stage's work list and shards (metareward/pipeline/answers.py) on the fake engine."""

from metareward.config import load_config
from metareward.engines.fake import FakeEngine
from metareward.evals import llmbar
from metareward.pipeline import answers
from metareward.records import Prompt


def _cfg(*extra):
    return load_config("smoke", ["engine.backend=fake", "eval.llmbar.limit=2", "eval.ifeval.limit=3", *extra])


def test_the_work_list_in_its_fixed_order():
    """2 held-out prompts, the first 3 shipped IFEval prompts, MT-Bench's 3 first turns, AlpacaEval's 4
    instructions, then LLMBar's first 2 Natural pairs in both orders: 2 + 3 + 3 + 4 + 4 = 16 calls."""
    cfg = _cfg()
    work = answers.calls_for(cfg, [Prompt(id="p1", prompt="Hi"), Prompt(id="p2", prompt="Yo")],
                             answers.load_sources(cfg))
    assert [c.id for c in work] == [
        "heldout/p1", "heldout/p2", "ifeval/9001", "ifeval/9002", "ifeval/9003", "mt_bench/1", "mt_bench/2",
        "mt_bench/3", "alpaca_eval/0", "alpaca_eval/1", "alpaca_eval/2", "alpaca_eval/3",
        "llmbar/Natural/0/noswap", "llmbar/Natural/0/swap", "llmbar/Natural/1/noswap", "llmbar/Natural/1/swap"]
    assert [c.max_new_tokens for c in work[:6]] == [96, 96, 64, 64, 64, 32]  # eval, ifeval, mt_bench lengths
    # smoke's LLMBar scoring is 'expected': the probability of a vs b after "Output (", nothing written
    first = work[-4]
    assert (first.prefix, first.choices, first.max_new_tokens) == ("Output (", ("a", "b"), 0)
    item = llmbar.read_dataset(llmbar.natural_path(), 1)[0]
    assert first.prompt == llmbar.VANILLA_SYSTEM + "\n\n" + llmbar.vanilla_prompt(item, False)[1]["content"]
    assert item["output_2"] in work[-3].prompt.split("Output (a):")[1].split("Output (b):")[0]  # swapped
    # the digest names the work: another limit is other work
    assert answers.digest(work) != answers.digest(answers.calls_for(cfg, [], answers.load_sources(cfg)))


def test_parse_scoring_writes_the_verdict():
    cfg = _cfg("eval.llmbar.scoring=parse", "eval.llmbar.max_new_tokens=5")
    work = answers.calls_for(cfg, [], answers.load_sources(cfg))
    assert all(c.max_new_tokens == 5 and not c.choices for c in work if c.id.startswith("llmbar/"))


def test_a_shard_answers_in_its_order_and_marks_what_does_not_fit():
    """Written answers are grouped by length, choice requests asked together; a prompt over the context (4 words
    with 4 new tokens, context 6) gets an empty answer marked 'too_long'."""
    work = [answers.Call("a/1", "one two three four", 4), answers.Call("c/1", "pick", prefix="Output (",
                                                                       choices=("a", "b")),
            answers.Call("a/2", "short", 2)]
    rows = answers.answer_shard(FakeEngine(context_length=6), work, [10, 11, 12])
    assert [r.id for r in rows] == ["a/1", "c/1", "a/2"]
    assert (rows[0].text, rows[0].finish_reason) == ("", "too_long")
    assert rows[1].text in ("Output (a", "Output (b") and abs(sum(rows[1].probs) - 1) < 1e-6
    assert rows[1].text[-1] == "ab"[rows[1].probs.index(max(rows[1].probs))]
    assert rows[2].text.startswith("Here is an answer") and rows[2].finish_reason == "stop"
    # the same item gives the same row in another shard (its own seed, its own text)
    assert answers.answer_shard(FakeEngine(), work[2:], [12])[0] == rows[2]
