"""TransformersEngine on the real embedded SmolLM2-135M-Instruct (slow: about 30-60 s on 2 CPU cores).

These check the plumbing and the maths (batching, ordering, seeding, stop tokens, probabilities), never the
small model's judgment quality.
"""

from __future__ import annotations

import math
import os

import pytest

from metareward.engines.base import Sampling
from metareward.method.prompts import SCORE_PREFIX, VERDICT_PREFIX

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

pytestmark = pytest.mark.slow

JUDGE = "Review the user's question and the response.\n<question>What is 2+2?</question>\n<response>4</response>"


@pytest.fixture(scope="session")
def engine():
    pytest.importorskip("torch")
    from metareward.engines.transformers_engine import TransformersEngine
    from metareward.engines.models import ModelNotFound, embedded_model_path

    try:
        path = embedded_model_path()
    except ModelNotFound as e:
        pytest.skip(str(e))
    eng = TransformersEngine(path, dtype="float32", batch_size=8)
    yield eng
    eng.close()


def reference_logprob(engine, ids: list[int], k: int) -> float:
    """log P(ids[k:] | ids[:k]) from one unpadded forward pass: independent of the engine's batching."""
    import torch

    with torch.inference_mode():
        logits = engine.model(input_ids=torch.tensor([ids], device=engine.device)).logits[0].float()
    lp = torch.log_softmax(logits, dim=-1)
    return sum(float(lp[t - 1, ids[t]]) for t in range(k, len(ids)))


def reference_probs(engine, prompt: str, prefix: str, choices: list[str]) -> list[float]:
    from metareward.engines.tokens import split_choices

    ctx = engine.render(prompt) + prefix
    seqs = [engine._encode(ctx + c) for c in choices]
    k, _ = split_choices(engine._encode(ctx), seqs)
    lps = [reference_logprob(engine, s, k) for s in seqs]
    top = max(lps)
    w = [math.exp(x - top) for x in lps]
    return [x / sum(w) for x in w]


def record_forward_shapes(engine, monkeypatch) -> list[tuple[int, int]]:
    """Patch the model's forward to record the input_ids shape of every call (undo with monkeypatch.undo())."""
    calls: list[tuple[int, int]] = []
    real = engine.model.forward

    def spy(*a, **kw):
        calls.append(tuple(kw["input_ids"].shape))
        return real(*a, **kw)

    monkeypatch.setattr(engine.model, "forward", spy)
    return calls


def assert_matches_generate(engine, ids: list[list[int]], ours: list[list[int]], max_new_tokens: int) -> int:
    """Our greedy tokens equal ``model.generate``'s on the plain left-padded batch, row by row, up to each row's end
    of turn; returns how many rows ended before ``max_new_tokens``."""
    import torch
    from transformers import GenerationConfig

    input_ids, mask, _ = engine._left_pad(ids)
    cfg = GenerationConfig(do_sample=False, max_new_tokens=max_new_tokens, eos_token_id=engine.stop_ids,
                           pad_token_id=engine.tokenizer.pad_token_id)
    with torch.inference_mode():
        ref = engine.model.generate(input_ids=input_ids, attention_mask=mask, generation_config=cfg)
    ended = 0
    for mine, theirs in zip(ours, ref[:, input_ids.shape[1]:].tolist()):
        cut = next((j + 1 for j, t in enumerate(theirs) if t in engine.stop_ids), len(theirs))
        assert mine == theirs[:cut]
        ended += cut < max_new_tokens
    return ended


def test_generate_shape_and_reproducible(engine):
    prompts = ["What is the capital of France?", "Write a short poem about the sea."]
    s = Sampling(temperature=0.8, top_p=0.95, max_new_tokens=16)
    a = engine.generate(prompts, 2, s, seed=7)
    assert [len(row) for row in a] == [2, 2]
    for row in a:
        for c in row:
            assert c.text and c.text == c.text.strip()
            assert 0 < c.n_tokens <= 16
            assert c.finish_reason in ("stop", "length")
            assert c.finish_reason == "stop" or c.n_tokens == 16
            assert "<|im_end|>" not in c.text and "<|im_start|>" not in c.text
    assert engine.generate(prompts, 2, s, seed=7) == a
    assert engine.generate(prompts, 2, s, seed=8) != a


def test_generate_stops_at_end_of_turn(engine):
    [[c1, c2]] = engine.generate(["Say hi."], 2, Sampling(temperature=0.0, max_new_tokens=48), seed=0)
    assert c1 == c2  # greedy: identical samples
    assert c1.finish_reason == "stop" and c1.n_tokens < 48
    [[short]] = engine.generate(["Write a long essay about the history of Rome."], 1,
                                Sampling(temperature=0.0, max_new_tokens=4), seed=0)
    assert short.finish_reason == "length" and short.n_tokens == 4


def test_batching_restores_prompt_order(engine, monkeypatch):
    prompts = [
        "Explain in detail, step by step, how a bicycle gear system lets a rider climb steep hills.",
        "Hi!",
        "Name a fruit that is yellow.",
    ]
    s = Sampling(temperature=0.0, max_new_tokens=8)
    alone = [engine.generate([p], 1, s, seed=0)[0][0].text for p in prompts]
    assert len(set(alone)) == 3
    seen = []
    from metareward.engines import decoding

    real = decoding.decode

    def spy(model, rows, repeats, **kw):
        seen.append([list(r) for r in rows])
        return real(model, rows, repeats, **kw)

    monkeypatch.setattr(engine, "batch_size", 2)
    monkeypatch.setattr(decoding, "decode", spy)
    batched = [row[0].text for row in engine.generate(prompts, 1, s, seed=0)]
    assert batched == alone
    rows = [r for batch in sorted(seen) for r in batch]  # (batches may run concurrently: any order of calls)
    assert len(seen) == 2 and rows == sorted(rows)  # batches hold prompts in token order (sharers together)


def test_batch_chunks_by_hand():
    from metareward.engines.transformers_engine import batch_chunks

    assert batch_chunks(8, 4) == [(0, 4), (4, 8)]  # ceil(8 / 4) = 2 batches, already a pair
    assert batch_chunks(6, 128) == [(0, 3), (3, 6)]  # one batch's worth, split in two
    # ceil(10 / 4) = 3 batches would leave one of two workers idle while the third runs: 4 of 2-3 prompts instead
    assert batch_chunks(10, 4) == [(0, 2), (2, 5), (5, 7), (7, 10)]
    # the meta-judge of 64 prompts at 128 rows a batch: 384 rows in 4 batches of 96, not 3 of 128
    assert batch_chunks(384, 128) == [(0, 96), (96, 192), (192, 288), (288, 384)]
    assert batch_chunks(3, 128) == [(0, 1), (1, 3)]  # (fewer prompts than 2 x 2: two batches)
    assert batch_chunks(1, 128) == [(0, 1)]


def test_two_workers_decode_two_batches_at_once_on_one_thread_each(engine, monkeypatch):
    """On two threads the engine runs two batches in two threads, each on one torch thread; one worker runs the
    same two batches one after the other on the caller's thread, with the same greedy texts (fp32)."""
    import threading

    import torch

    from metareward.engines import decoding

    prompts = ["Say hi.", "Name three colours.", "What is 2+2? Answer with a number only.", "Name a fruit."]
    s = Sampling(temperature=0.0, max_new_tokens=12)
    real, seen = decoding.decode, []

    def spy(model, rows, repeats, **kw):
        seen.append((threading.get_ident(), torch.get_num_threads(), len(rows)))
        return real(model, rows, repeats, **kw)

    monkeypatch.setattr(decoding, "decode", spy)
    monkeypatch.setattr(engine, "workers", 1)
    one = engine.generate(prompts, 1, s, seed=0)
    assert seen == [(threading.get_ident(), torch.get_num_threads(), 2)] * 2
    seen.clear()
    monkeypatch.setattr(engine, "workers", 2)
    two = engine.generate(prompts, 1, s, seed=0)
    assert two == one
    assert sorted(n for _, _, n in seen) == [2, 2] and [t for _, t, _ in seen] == [1, 1]
    assert len({ident for ident, _, _ in seen} | {threading.get_ident()}) == 3  # two worker threads
    assert engine.model.config._attn_implementation != "metareward_shared_prefix"  # switched back after both


def test_one_worker_on_one_thread_samples_the_two_workers_texts(engine, monkeypatch):
    """The batches depend on (prompts, n, batch_size) only and each row draws from its own stream, so a replica
    given one thread (one worker, batches one after another) samples the very texts of a two-worker engine."""
    import torch

    prompts = ["Say hi.", "Name three colours.", "What is 2+2?", "Name a fruit.", "Write a haiku about rain."]
    s = Sampling(temperature=0.9, top_p=0.95, max_new_tokens=12)
    monkeypatch.setattr(engine, "workers", 2)
    two = engine.generate(prompts, 2, s, seed=5)
    monkeypatch.setattr(engine, "workers", 1)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        one = engine.generate(prompts, 2, s, seed=5)
    finally:
        torch.set_num_threads(threads)
    assert one == two
    assert len({c.text for row in two for c in row}) > 5  # (sampled: the streams differ)


def test_a_prompts_samples_follow_its_seeds_not_its_position(engine):
    """The same prompts in another order, each with its own seed: the same samples per prompt (token order puts
    them in the same batches, so this is exact)."""
    prompts = ["Name a colour.", "Name an animal.", "Name a city.", "Name a river."]
    seeds = [100, 200, 300, 400]
    s = Sampling(temperature=0.9, top_p=0.95, max_new_tokens=10)
    out = engine.generate(prompts, 2, s, seed=seeds)
    turned = [3, 1, 0, 2]
    assert engine.generate([prompts[i] for i in turned], 2, s, seed=[seeds[i] for i in turned]) == [
        out[i] for i in turned]


def test_the_streams_of_a_call_are_the_prompt_seeds_plus_the_sample(engine, monkeypatch):
    """n = 2 over two identical prompts: the four rows draw from four distinct streams, s .. s + 3, whether the
    seed is an int (`prompt_seeds`: s, s + 2) or given per prompt; greedy draws nothing."""
    from metareward.engines import decoding

    seen, real = [], decoding.row_uniforms

    def spy(seeds, steps, device=None):
        seen.extend(seeds)
        return real(seeds, steps, device)

    monkeypatch.setattr(decoding, "row_uniforms", spy)
    s = Sampling(temperature=0.8, top_p=0.95, max_new_tokens=2)
    engine.generate(["Say hi.", "Say hi."], 2, s, seed=10)
    assert sorted(seen) == [10, 11, 12, 13]
    seen.clear()
    engine.generate(["Say hi.", "Say hi."], 2, s, seed=[20, 22])
    assert sorted(seen) == [20, 21, 22, 23]
    seen.clear()
    engine.generate_chat([[{"role": "user", "content": "Say hi."}]], 3, s, seed=[7])
    assert sorted(seen) == [7, 8, 9]
    seen.clear()
    engine.generate(["Say hi.", "Say hi."], 2, Sampling(temperature=0.0, max_new_tokens=2), seed=10)
    assert seen == []


def test_each_row_draws_its_own_stream_through_compaction(engine, monkeypatch):
    """Inside `decode`, the uniform a row samples with at step t is entry t of its own stream, also after finished
    rows were dropped and live ones moved into their slots: each (row, step) gets a distinct marked value here,
    and every token of every row was drawn at its own."""
    import torch

    from metareward.engines import decoding

    streams, where, drawn = [], {}, []

    def marked(seeds, steps, device=None):  # row r, step t -> a distinct value, spread over [0, 1)
        streams.append(list(seeds))
        k = torch.arange(len(seeds) * steps, dtype=torch.float64)
        table = (k * 0.6180339887 % 1).float().view(len(seeds), steps)
        where.update({float(v): (r, t) for r, row in enumerate(table) for t, v in enumerate(row)})
        return table.to(device)

    real = decoding.nucleus_sample

    def spy(logits, temperature, top_p, u, **kw):
        tok = real(logits, temperature, top_p, u, **kw)
        drawn.append([(where[float(x)], int(k)) for x, k in zip(u[:, 0], tok)])
        return tok

    monkeypatch.setattr(decoding, "row_uniforms", marked)
    monkeypatch.setattr(decoding, "nucleus_sample", spy)
    ids = [engine._encode(engine.render(p)) for p in ["Say hi.", "Write a long essay about the history of Rome."]]
    toks = decoding.decode(engine.model, ids, 3, max_new_tokens=24, temperature=0.7, top_p=0.95,
                           stop_ids=engine.stop_ids, pad_id=engine.tokenizer.pad_token_id, seeds=[40, 50])
    assert streams == [[40, 41, 42, 50, 51, 52]]  # rows r * 3 + j: prompt r's sample j
    assert all(t == step for step, draws in enumerate(drawn) for (_, t), _ in draws)
    assert all(((r, t), k) in drawn[t] for r, row in enumerate(toks) for t, k in enumerate(row))
    assert min(len(draws) for draws in drawn) < len(toks)  # rows were dropped: the draws followed the moved rows


def test_greedy_decode_matches_transformers_generate(engine, monkeypatch):
    """Our decode loop (shared-prefix prefill, growing KV cache, dropping finished rows) against
    ``model.generate`` on the same left-padded batch: greedy tokens must be identical, row by row, up to each
    row's end of turn."""
    from metareward.engines.decoding import decode, prefix_tree

    prompts = ["Say hi.", "Name three colours.", "Explain why the sky is blue in two sentences.",
               "What is 2+2? Answer with a number only.", "Write a haiku about autumn leaves."]
    ids = [engine._encode(engine.render(p)) for p in prompts]
    k = len(os.path.commonprefix(ids))  # the chat template's system turn
    [level], _ = prefix_tree(ids)  # one level: that turn, shared by every row
    assert level.group_of == [0] * len(prompts) and level.stretches == [ids[0][:k]] and k >= 16
    calls = record_forward_shapes(engine, monkeypatch)
    ours = decode(engine.model, ids, 1, max_new_tokens=40, temperature=0.0, top_p=1.0, stop_ids=engine.stop_ids,
                  pad_id=engine.tokenizer.pad_token_id)
    monkeypatch.undo()
    assert calls[0] == (1, k) and calls[1][0] == len(prompts)  # the shared prefix ran once, then each row's own
    ended = assert_matches_generate(engine, ids, ours, 40)
    assert ended >= 2  # rows ended at different steps, so finished rows were dropped mid-batch


def test_samples_of_a_prompt_share_one_prefill(engine, monkeypatch):
    """n samples of one prompt: the prompt is run through the model once (a batch of 1), then repeated."""
    from metareward.engines import decoding


    calls = record_forward_shapes(engine, monkeypatch)
    toks = decoding.decode(engine.model, [engine._encode(engine.render("Name a colour."))], 3, max_new_tokens=4,
                           temperature=0.8, top_p=0.95, stop_ids=engine.stop_ids,
                           pad_id=engine.tokenizer.pad_token_id, seeds=[0])
    assert len(toks) == 3
    assert calls[0][0] == 1 and calls[0][1] > 1  # prefill: one row, the whole prompt
    assert all(c[1] == 1 for c in calls[1:]) and calls[1][0] <= 3  # decode steps: one token per row


def test_score_prefix_takes_the_one_token_path_and_matches_full(engine):
    from metareward.engines.tokens import split_choices

    ctx = engine.render(JUDGE) + "The response is correct.\n" + SCORE_PREFIX
    ctx_ids = engine._encode(ctx)
    k, conts = split_choices(ctx_ids, [engine._encode(ctx + d) for d in "012345"])
    assert k == len(ctx_ids) and all(len(c) == 1 for c in conts)  # SmolLM2 splits digits: "Score: " + "3" is clean

    prompts, prefixes = [JUDGE, JUDGE + " Be strict."], ["The response is correct.\n" + SCORE_PREFIX] * 2
    fast = engine.choice_probs(prompts, prefixes, list("012345"))
    full = engine._choice_probs(prompts, prefixes, list("012345"), method="full")
    ref = reference_probs(engine, prompts[0], prefixes[0], list("012345"))
    for row in fast:
        assert len(row) == 6 and abs(sum(row) - 1) < 1e-9 and all(p > 0 for p in row)
    for f, g in zip(fast, full):
        assert max(abs(x - y) for x, y in zip(f, g)) < 1e-4
    assert max(abs(x - y) for x, y in zip(fast[0], ref)) < 1e-4
    assert fast[0] != fast[1]  # the two prompts really were scored separately


def test_verdict_prefix_trailing_space_is_handled(engine):
    """'Winner: Judgment ' + 'A' tokenises as 'Judgment', ' A' (the space merges into the letter): the engine
    backs off one token and still answers with one forward pass; reading P('A' | ... ' ') would be wrong."""
    from metareward.engines.tokens import split_choices

    ctx = engine.render(JUDGE) + VERDICT_PREFIX
    ctx_ids = engine._encode(ctx)
    k, conts = split_choices(ctx_ids, [engine._encode(ctx + c) for c in "AB"])
    assert k == len(ctx_ids) - 1 and all(len(c) == 1 for c in conts)

    spaced = engine.choice_probs([JUDGE], [VERDICT_PREFIX], ["A", "B"])[0]
    unspaced = engine.choice_probs([JUDGE], [VERDICT_PREFIX.rstrip()], [" A", " B"])[0]
    full = engine._choice_probs([JUDGE], [VERDICT_PREFIX], ["A", "B"], method="full")[0]
    ref = reference_probs(engine, JUDGE, VERDICT_PREFIX, ["A", "B"])
    assert abs(sum(spaced) - 1) < 1e-9
    for other in (unspaced, full, ref):
        assert max(abs(x - y) for x, y in zip(spaced, other)) < 1e-4


def test_multi_token_choices_use_the_likelihood_path(engine):
    choices = [" yes, definitely", " no", " maybe"]
    prompts, prefixes = [JUDGE, "Is the sky blue?"], ["Answer:", "Answer:"]
    got = engine.choice_probs(prompts, prefixes, choices)
    for p, pre, row in zip(prompts, prefixes, got):
        assert abs(sum(row) - 1) < 1e-9
        ref = reference_probs(engine, p, pre, choices)
        assert max(abs(x - y) for x, y in zip(row, ref)) < 1e-4


def test_closed_engine_refuses():
    pytest.importorskip("torch")
    from metareward.engines.transformers_engine import TransformersEngine
    from metareward.engines.models import ModelNotFound, embedded_model_path

    try:
        path = embedded_model_path()
    except ModelNotFound as e:
        pytest.skip(str(e))
    eng = TransformersEngine(path, batch_size=2)
    eng.close()
    eng.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        eng.generate(["x"], 1, Sampling(max_new_tokens=2), seed=0)


def test_generate_chat_sees_the_whole_conversation(engine):
    convo = [{"role": "user", "content": "My name is Ada."}, {"role": "assistant", "content": "Hello Ada!"},
             {"role": "user", "content": "What is my name?"}]
    text = engine.render(convo)
    assert text.count("<|im_start|>user") == 2 and "Hello Ada!" in text and text.endswith("<|im_start|>assistant\n")
    s = Sampling(temperature=0.0, max_new_tokens=12)
    [[reply]] = engine.generate_chat([convo], 1, s, seed=0)
    [[alone]] = engine.generate(["What is my name?"], 1, s, seed=0)
    assert reply.text and reply != alone  # the earlier turns changed the answer's context


def test_hf_generate_path_gives_the_same_greedy_text(engine, monkeypatch):
    """The GPU path (HF generate) and our CPU decode loop are interchangeable: same greedy texts, same shape."""
    prompts = ["Name a fruit that is yellow.", "Say hi.", "What is the capital of Italy?"]
    s = Sampling(temperature=0.0, max_new_tokens=24)
    ours = engine.generate(prompts, 2, s, seed=0)
    monkeypatch.setattr(engine, "own_decoder", False)
    theirs = engine.generate(prompts, 2, s, seed=0)
    assert theirs == ours
    import torch

    seeded = []
    real_seed = torch.manual_seed
    monkeypatch.setattr(torch, "manual_seed", lambda s: (seeded.append(s), real_seed(s))[1])
    sampled = engine.generate(prompts, 3, Sampling(temperature=0.8, top_p=0.95, max_new_tokens=8), seed=1)
    assert [len(r) for r in sampled] == [3, 3, 3] and all(c.n_tokens <= 8 for r in sampled for c in r)
    # prompt seeds 1, 4, 7; rows (prompt, sample) by prompt length: batch 0 starts at the shortest prompt's sample
    # 0, batch 1 (row 8 of 9) at the longest's sample 2: each batch is seeded with its first row's stream
    short, _, long = sorted(range(3), key=lambda i: len(engine._encode(engine.render(prompts[i]))))
    assert seeded == [1 + 3 * short, 1 + 3 * long + 2]


def test_generate_scored_equals_generate_then_choice_probs(engine):
    """The judge's shortcut (score on the sample's own KV cache) against the two-pass way: same texts as
    `generate`, and wherever it gives probabilities they equal `choice_probs` on text + "\\nScore: "."""
    prompts = [JUDGE, "Rate the answer 'Paris' to 'What is the capital of France?' from 0 to 5, briefly."]
    s = Sampling(temperature=0.8, top_p=0.95, max_new_tokens=12)
    scored = engine.generate_scored(prompts, 3, s, seed=3, suffix="\n" + SCORE_PREFIX, choices=list("012345"))
    plain = engine.generate(prompts, 3, s, seed=3)
    assert [[c for c, _ in row] for row in scored] == plain
    got = [(p, c.text, probs) for p, row in zip(prompts, scored) for c, probs in row if probs is not None]
    assert len(got) >= 4  # most samples take the shortcut (the rest fall back to choice_probs in the stage)
    ref = engine.choice_probs([p for p, _, _ in got], [f"{t}\n{SCORE_PREFIX}" for _, t, _ in got], list("012345"))
    for (_, _, probs), want in zip(got, ref):
        assert sum(probs) == pytest.approx(1.0)
        assert probs == pytest.approx(want, abs=2e-3)


def test_prefix_tree_prefill_matches_transformers_generate(engine, monkeypatch):
    """Prompts sharing stretches at several depths (the meta-judge's instructions, then its question and response,
    then its first judgment) have each stretch encoded once per group and read from one copy: greedy tokens
    still equal ``model.generate``'s on the plain left-padded batch."""
    from metareward.engines.decoding import decode, prefix_tree

    story = ("The old lighthouse keeper climbed the spiral stairs every evening, counting one hundred and twelve "
             "steps, to light the lamp that guided the fishing boats home through the fog. ")
    judged = ("Judgment A: the answer names the keeper, counts the steps correctly and keeps the fog, but it "
              "forgets the boats and the reason for the lamp. ")
    prompts = [f"{story}{judged}Judgment B: 'short'. Which is better?",
               f"{story}{judged}Judgment B: 'long'. Which is better?",
               "Say hi.", f"{story}Summarise it in five words."]
    ids = [engine._encode(engine.render(p)) for p in prompts]
    levels, offset = prefix_tree(ids)
    k = len(os.path.commonprefix(ids))  # the system turn every prompt shares (commonprefix works on lists)
    # level 0: the system turn, all rows; level 1: the story (rows 0, 1, 3); level 2: the first judgment (0, 1)
    assert [lv.group_of for lv in levels] == [[0, 0, 0, 0], [0, 0, -1, 0], [0, 0, -1, -1]]
    assert len(levels[0].stretches[0]) == k and len(levels[2].stretches[0]) >= 32
    assert offset[2] == k and offset[0] == offset[1] > offset[3] > k

    calls = record_forward_shapes(engine, monkeypatch)
    ours = decode(engine.model, ids, 1, max_new_tokens=24, temperature=0.0, top_p=1.0, stop_ids=engine.stop_ids,
                  pad_id=engine.tokenizer.pad_token_id)
    monkeypatch.undo()
    # one row per level, then the 4 rows' own tokens (in chunks of similar length), then one token per row and step
    assert calls[:3] == [(1, k), (1, len(levels[1].stretches[0])), (1, len(levels[2].stretches[0]))]
    own = [c for c in calls[3:] if c[1] > 1]
    assert sum(rows for rows, _ in own) == 4 and max(w for _, w in own) == max(len(s) - o for s, o in zip(ids, offset))
    assert_matches_generate(engine, ids, ours, 24)


def test_prefix_tree_by_hand():
    from metareward.engines.decoding import prefix_tree

    shared, long = list(range(20)), [100 + i for i in range(40)]
    a, b, c = shared + long + [1, 2], shared + long + [3], shared + [7, 8]
    levels, offset = prefix_tree([a, c, b])
    # all three share 20 tokens (>= 16): level 0; a and b share 40 more (>= 32): level 1, c has no stretch there;
    # a and b differ after that, and b keeps its last token as its own
    assert [lv.group_of for lv in levels] == [[0, 0, 0], [0, -1, 0]]
    assert levels[0].stretches == [shared] and levels[1].stretches == [long]
    assert offset == [60, 20, 60]
    # a single prompt, or prompts sharing fewer than 16 leading tokens, make no level
    assert prefix_tree([a]) == ([], [0])
    assert prefix_tree([[1] * 15 + [2], [1] * 15 + [3]]) == ([], [0, 0])


def test_context_length_and_prompt_tokens(engine):
    """SmolLM2-135M's config says 8192 positions; a prompt's tokens are those of its chat-templated text."""
    assert engine.context_length == 8192
    short, long = "Hi", "Hi " * 300
    n_short, n_long = engine.prompt_tokens([short, long])
    assert n_short == len(engine._encode(engine.render(short))) and n_long > n_short + 250


def test_choice_probs_without_the_own_decoder_agree(engine, monkeypatch):
    """On a GPU the engine scores choices with a plain padded batch (the CPU flash kernel of the shared-prefix
    attention is not there): both paths give the same probabilities."""
    prompts, prefixes = [JUDGE, JUDGE + " Be strict."], ["The response is correct.\n" + SCORE_PREFIX] * 2
    shared = engine.choice_probs(prompts, prefixes, list("012345"))
    monkeypatch.setattr(engine, "own_decoder", False)
    plain = engine.choice_probs(prompts, prefixes, list("012345"))
    for a, b in zip(shared, plain):
        assert a == pytest.approx(b, abs=2e-3)


def test_prefill_rows_of_different_lengths_run_in_chunks_and_match_generate(engine, monkeypatch):
    """A short and a long prompt run as separate chunks (padding one to the other would cost more than a pass);
    the short row's unwritten positions hold zeros (masked keys get weight 0, and 0 x NaN would be NaN), and
    greedy tokens still equal ``model.generate``'s."""
    import torch

    from metareward.engines.decoding import decode, length_chunks, prefill, prefix_tree

    prompts = ["Say hi.", "Describe, in one paragraph, " + "a long winding river through old forests and " * 12 + "hills."]
    ids = [engine._encode(engine.render(p)) for p in prompts]
    _, offset = prefix_tree(ids)
    assert len(length_chunks([len(s) - o for s, o in zip(ids, offset)])) == 2
    with torch.inference_mode():
        cache, _, mask, _ = prefill(engine.model, ids, engine.tokenizer.pad_token_id, 4)
    short = mask[0] == 0
    for layer in cache.layers:
        assert torch.isfinite(layer.keys).all() and torch.isfinite(layer.values).all()
        assert not layer.keys[0][:, short].any() and not layer.values[0][:, short].any()
    ours = decode(engine.model, ids, 1, max_new_tokens=12, temperature=0.0, top_p=1.0, stop_ids=engine.stop_ids,
                  pad_id=engine.tokenizer.pad_token_id)
    assert_matches_generate(engine, ids, ours, 12)


def test_non_finite_shortcut_scores_fall_back(engine):
    """A shortcut score that is not finite is never returned (the stage scores that judgment the usual way)."""
    from metareward.engines.base import Completion

    held = engine._encode(engine.render(JUDGE) + "Fine.")
    c = Completion(text="Fine.", n_tokens=2, finish_reason="stop")
    suffix_ids = engine._encode("It is.\n" + SCORE_PREFIX)[len(engine._encode("It is.")):]
    choice_ids = [engine._encode("It is.\n" + SCORE_PREFIX + ch)[-1] for ch in "01"]
    ok = engine._checked_probs(JUDGE, c, held, "\n" + SCORE_PREFIX, suffix_ids, list("01"), choice_ids, [-1.0, -2.0])
    assert ok is not None and sum(ok) == pytest.approx(1.0)
    bad = engine._checked_probs(JUDGE, c, held, "\n" + SCORE_PREFIX, suffix_ids, list("01"), choice_ids,
                                [float("nan"), -2.0])
    assert bad is None


@pytest.mark.parametrize("workers", [1, 2])
def test_the_progress_bar_moves_as_rows_end(engine, monkeypatch, workers):
    """The generate bar counts completions as their rows end inside a batch (greedy: a row stands for its n
    copies), not only when the batch is done; it ends at prompts x n. Listeners are called from the caller's
    thread only."""
    import threading

    from metareward import progress
    from metareward.engines import decoding, transformers_engine

    prompts = ["Say hi.", "Write a long essay about the history of Rome."]
    s = Sampling(temperature=0.0, max_new_tokens=24)
    [[hi, _], [rome, _]] = engine.generate(prompts, 2, s, seed=0)
    assert hi.finish_reason == "stop" and rome.finish_reason == "length"  # the rows end at different steps

    calls, seen = [], []
    real = decoding.decode

    def spy(model, rows, repeats, **kw):  # the calls decode makes, in its own thread
        def count(k):
            calls.append(k)
            kw["on_rows_done"](k)
        return real(model, rows, repeats, **{**kw, "on_rows_done": count})

    monkeypatch.setattr(decoding, "decode", spy)
    monkeypatch.setattr(engine, "workers", workers)
    monkeypatch.setattr(transformers_engine, "PROGRESS_EVERY_S", 0.05)
    with progress.listening(lambda label, done, total: seen.append((threading.get_ident(), done, total))):
        assert engine.generate(prompts, 2, s, seed=0) == [[hi, hi], [rome, rome]]
    assert sorted(calls) == [1, 1]  # one row per prompt (greedy), each reported once, when it ended
    assert {ident for ident, _, _ in seen} == {threading.get_ident()}
    done = [d for _, d, _ in seen]
    assert done == sorted(done) and done[-1] == 4 and {t for _, _, t in seen} == {4}
    if workers == 1:  # in this thread the bar moves at once: "Say hi." ended first, with its 2 copies
        assert 2 in done


def test_the_config_picks_the_decode_loop(engine):
    """engine.decoder reaches the engine: 'generate' runs HF generate on a CPU too, 'auto' keeps ours here."""
    from metareward.config import EngineSection, ModelSection
    from metareward.engines import open_engine

    assert engine.own_decoder is True  # the fixture's engine: 'auto' on a CPU
    hf = open_engine("transformers", engine.model_path, engine_cfg=EngineSection(decoder="generate"),
                     model_cfg=ModelSection())
    try:
        assert hf.own_decoder is False and hf.workers == 1
        greedy = Sampling(temperature=0.0, max_new_tokens=6)
        assert hf.generate(["Say hi."], 1, greedy, seed=0) == engine.generate(["Say hi."], 1, greedy, seed=0)
    finally:
        hf.close()
