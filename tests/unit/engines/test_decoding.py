"""The decode loop's helpers: the nucleus sampler on hand-made distributions, row compaction, the sliced output head;
which loop `auto` picks."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from metareward.engines.decoding import fill_order, nucleus_sample, row_seeds, row_uniforms  # noqa: E402

# P = [0.5, 0.3, 0.15, 0.05] (token order scrambled below so "sorted" is not the input order)
PROBS = {3: 0.5, 0: 0.3, 2: 0.15, 1: 0.05}


def logits(rows: int = 1) -> torch.Tensor:
    x = torch.tensor([math.log(PROBS[t]) for t in range(4)])
    return x.repeat(rows, 1)


def freqs(tokens: torch.Tensor) -> dict[int, float]:
    return {t: float((tokens == t).float().mean()) for t in range(4)}


def uniforms(rows: int, seed: int) -> torch.Tensor:
    return torch.rand((rows, 1), generator=torch.Generator().manual_seed(seed))


def test_greedy_is_argmax():
    assert nucleus_sample(logits(2), 0.0, 0.9, None).tolist() == [3, 3]


def test_top_p_keeps_the_head_that_reaches_p():
    # p = 0.8: mass before token 3 is 0, before token 0 is 0.5 (< 0.8, kept), before token 2 is 0.8 (not < 0.8):
    # nucleus {3, 0}, renormalised 0.5/0.8 = 0.625 and 0.3/0.8 = 0.375.
    f = freqs(nucleus_sample(logits(20000), 1.0, 0.8, uniforms(20000, 0)))
    assert f[2] == 0 and f[1] == 0
    assert f[3] == pytest.approx(0.625, abs=0.015) and f[0] == pytest.approx(0.375, abs=0.015)


def test_nucleus_wider_than_the_candidates_falls_back_to_the_full_sort():
    # p = 0.9 with 2 candidates: their mass 0.8 < 0.9, so the full sort decides: nucleus {3, 0, 2},
    # probabilities 0.5/0.95, 0.3/0.95, 0.15/0.95 = 0.526, 0.316, 0.158; token 1 never drawn.
    f = freqs(nucleus_sample(logits(20000), 1.0, 0.9, uniforms(20000, 1), candidates=2))
    assert f[1] == 0
    assert f[3] == pytest.approx(0.526, abs=0.015)
    assert f[0] == pytest.approx(0.316, abs=0.015)
    assert f[2] == pytest.approx(0.158, abs=0.015)


def test_temperature_and_top_p_one_sample_the_whole_tempered_distribution():
    # T = 2 flattens p to p^(1/2) / sum: sqrt(.5, .3, .15, .05) = .7071, .5477, .3873, .2236 (sum 1.8657)
    # -> 0.379, 0.294, 0.208, 0.120 for tokens 3, 0, 2, 1.
    f = freqs(nucleus_sample(logits(40000), 2.0, 1.0, uniforms(40000, 2)))
    assert f[3] == pytest.approx(0.379, abs=0.012)
    assert f[0] == pytest.approx(0.294, abs=0.012)
    assert f[2] == pytest.approx(0.208, abs=0.012)
    assert f[1] == pytest.approx(0.120, abs=0.012)


def test_same_uniforms_same_tokens():
    a = nucleus_sample(logits(64), 0.8, 0.95, uniforms(64, 5))
    b = nucleus_sample(logits(64), 0.8, 0.95, uniforms(64, 5))
    assert torch.equal(a, b)


def test_each_row_is_drawn_at_its_own_uniform_by_inverse_cdf():
    # sorted tokens 3, 0, 2, 1 with P 0.5, 0.3, 0.15, 0.05. Top-p 0.8: nucleus {3, 0}, kept CDF 0.5, 0.8, so u is
    # scaled by 0.8: u = 0.1 -> 0.08 < 0.5: token 3; u = 0.7 -> 0.56 > 0.5: token 0; u = 0.62 -> 0.496: token 3.
    u = torch.tensor([[0.1], [0.7], [0.62]])
    assert nucleus_sample(logits(3), 1.0, 0.8, u).tolist() == [3, 0, 3]
    # top_p = 1: the whole CDF 0.3, 0.35, 0.5, 1.0 over tokens 0..3 (no sort): 0.2 -> 0, 0.32 -> 1, 0.4 -> 2, 0.9 -> 3
    u = torch.tensor([[0.2], [0.32], [0.4], [0.9]])
    assert nucleus_sample(logits(4), 1.0, 1.0, u).tolist() == [0, 1, 2, 3]
    # the wide-nucleus fallback (2 candidates, p = 0.9) uses the row's same uniform: nucleus {3, 0, 2}, CDF 0.5, 0.8,
    # 0.95; u = 0.9 -> 0.855 > 0.8: token 2, which the 2 candidates alone could not give
    assert nucleus_sample(logits(1), 1.0, 0.9, torch.tensor([[0.9]]), candidates=2).tolist() == [2]


def test_sampling_needs_uniforms_and_greedy_draws_none():
    with pytest.raises(ValueError, match="uniform"):
        nucleus_sample(logits(2), 0.8, 0.95, None)
    assert nucleus_sample(logits(2), 0.0, 0.95, None).tolist() == [3, 3]


def test_sample_j_of_prompt_i_draws_from_seed_i_plus_j():
    assert row_seeds([10, 12], 2) == [10, 11, 12, 13]  # seeds [s, s + 2], n = 2: the streams s .. s + 3
    assert row_seeds([7, 3], 1) == [7, 3]
    assert row_seeds([5, 5], 3) == [5, 6, 7, 5, 6, 7]  # (callers space seeds n apart; equal seeds share streams)


def test_a_rows_uniforms_are_its_own_generators_draws():
    table = row_uniforms([5, 9], 6)
    assert table.shape == (2, 6)
    for r, seed in enumerate([5, 9]):
        g = torch.Generator().manual_seed(seed)
        assert torch.equal(table[r], torch.cat([torch.rand(1, generator=g) for _ in range(6)]))  # one per step
    # a row's first steps do not depend on how many steps, or which rows beside it
    assert torch.equal(row_uniforms([3, 9, 4], 3)[1], table[1, :3])


def test_fill_order_keeps_live_rows_in_place_and_fills_holes_from_the_end():
    live = torch.tensor([1, 0, 1, 1, 0, 1], dtype=torch.bool)
    assert fill_order(live).tolist() == [0, 5, 2, 3]  # row 5 moves into row 1's slot; n = 4 live rows
    assert fill_order(torch.tensor([0, 0, 1, 1], dtype=torch.bool)).tolist() == [2, 3]
    assert fill_order(torch.tensor([1, 1, 0, 0], dtype=torch.bool)).tolist() == [0, 1]


class _Head(torch.nn.Module):
    """A model whose output head is a Linear (what `output_head_in_slices` switches)."""

    def __init__(self, vocab: int, hidden: int, bias: bool = False, dtype=torch.float32):
        super().__init__()
        self.lm_head = torch.nn.Linear(hidden, vocab, bias=bias, dtype=dtype)

    def get_output_embeddings(self):
        return self.lm_head


@pytest.mark.parametrize("bias", [False, True])
def test_sliced_output_head_gives_the_same_logits_and_switches_back(bias):
    from metareward.engines import shared_prefix
    from metareward.engines.decoding import HEAD_SLICE, output_head_in_slices
    from metareward.engines.transformers_engine import torch_threads

    torch.manual_seed(0)
    model = _Head(4 * HEAD_SLICE + 100, 64, bias)  # the last slice is partial
    x = torch.randn(3, 5, 64)
    want = torch.nn.functional.linear(x, model.lm_head.weight, model.lm_head.bias)
    with torch_threads(1), torch.inference_mode():
        with output_head_in_slices(model):
            assert "forward" in vars(model.lm_head)  # switched
            with output_head_in_slices(model):  # a second decode thread on the same model
                pass
            assert "forward" in vars(model.lm_head)  # still switched: the first block is open
            got = model.lm_head(x)
        assert "forward" not in vars(model.lm_head) and not shared_prefix._OPEN
    assert got.shape == want.shape == (3, 5, 4 * HEAD_SLICE + 100)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_sliced_output_head_only_where_measured():
    from metareward.engines.decoding import output_head_in_slices
    from metareward.engines.transformers_engine import torch_threads

    for model, threads in [(_Head(4096, 64, dtype=torch.bfloat16), 1),  # not float32
                           (_Head(1000, 64), 1),  # a small vocabulary
                           (_Head(4096, 64), 2)]:  # more than one compute thread
        with torch_threads(threads), output_head_in_slices(model):
            assert "forward" not in vars(model.lm_head)


def test_the_decoder_is_ours_on_a_cpu_and_hf_generate_on_a_gpu_unless_one_is_asked_for(caplog):
    from metareward.engines.decoding import own_decoder

    with caplog.at_level("INFO", logger="metareward.engines.decoding"):
        assert own_decoder("auto", "cpu") is True
        assert own_decoder("auto", "cuda") is False
    # 'auto' says which loop it took and why (the measured figures)
    assert "auto -> own on cpu" in caplog.text and "auto -> generate on cuda" in caplog.text
    assert own_decoder("own", "cuda") is True and own_decoder("generate", "cpu") is False
    with pytest.raises(ValueError, match="decoder must be auto, own or generate"):
        own_decoder("fast", "cpu")
