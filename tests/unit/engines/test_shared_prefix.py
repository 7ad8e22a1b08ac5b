"""Shared-prefix attention on hand-made tensors: the parts (a batch-wide level, a grouped level some rows are not
in, each row's own keys) merge to plain attention over each row's whole set of keys."""

from __future__ import annotations

import types

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from metareward.engines.shared_prefix import (_FLASH, GrowingLayer, Level, TreeCache, attention,  # noqa: E402
                                              own_mask, padding_mask, small_query_attention)

KV, REP, D = 2, 3, 8  # 2 key/value heads, 3 query heads each


def reference(q, rows_keys, rows_values, scale):
    """Plain attention, row by row, over each row's own list of keys (query heads share their key/value head)."""
    out = []
    for b, (k, v) in enumerate(zip(rows_keys, rows_values)):
        k, v = k.repeat_interleave(REP, dim=0), v.repeat_interleave(REP, dim=0)  # [H, n, D]
        w = torch.softmax(q[b] @ k.transpose(-1, -2) * scale, dim=-1)  # [H, Q, n]
        out.append((w @ v).transpose(0, 1))  # [Q, H, D]
    return torch.stack(out)


def test_levels_and_own_keys_merge_to_plain_attention():
    torch.manual_seed(0)
    b, q_len = 4, 1
    # level 0: 5 tokens shared by all rows; level 1: groups {0, 2} (3 tokens) and {3} (2 tokens, left-padded),
    # row 1 has no stretch there; own: 4 positions, row 0's first one padding
    k0, v0 = torch.randn(1, KV, 5, D), torch.randn(1, KV, 5, D)
    k1, v1 = torch.randn(2, KV, 3, D), torch.randn(2, KV, 3, D)
    m1 = torch.tensor([[1, 1, 1], [0, 1, 1]])
    level0 = Level([k0], [v0], None, torch.tensor([0, 0, 0, 0]))
    level1 = Level([k1], [v1], padding_mask(m1, torch.float32), torch.tensor([0, -1, 0, 1]))
    assert level0.identity and not level1.identity and level1.missing
    tree = TreeCache(1, 8, [level0, level1])
    own_k, own_v = torch.randn(b, KV, 4, D), torch.randn(b, KV, 4, D)
    own2d = torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 1, 1]])
    query = torch.randn(b, KV * REP, q_len, D)
    got, _ = attention(types.SimpleNamespace(layer_idx=0), query, own_k, own_v,
                       own_mask(own2d, q_len, REP, torch.float32), scaling=0.3, tree=tree)

    rows_k, rows_v = [], []
    for r, g1 in enumerate([0, None, 0, 1]):
        ks, vs = [k0[0]], [v0[0]]
        if g1 is not None:
            real = m1[g1].bool()
            ks.append(k1[g1][:, real])
            vs.append(v1[g1][:, real])
        real = own2d[r].bool()
        ks.append(own_k[r][:, real])
        vs.append(own_v[r][:, real])
        rows_k.append(torch.cat(ks, dim=1))
        rows_v.append(torch.cat(vs, dim=1))
    want = reference(query, rows_k, rows_v, 0.3)
    assert got.shape == (b, q_len, KV * REP, D)
    assert torch.allclose(got, want, atol=1e-5)

    # copying the grouped level into the rows' own keys changes nothing: attention is over a set of keys
    before = got
    own_layer = GrowingLayer(8)
    own_layer.update(own_k, own_v)
    tree.layers = [own_layer]
    new2d = tree.inline_small_levels(own2d, min_saving=10**9)
    assert tree.levels == [] and new2d.shape == (b, 5 + 3 + 4)
    assert new2d[1, 5:8].tolist() == [0, 0, 0] and new2d[3, 5:8].tolist() == [0, 1, 1]  # row 1 had no stretch
    lay = tree.layers[0]
    got, _ = attention(types.SimpleNamespace(layer_idx=0), query, lay.keys, lay.values,
                       own_mask(new2d, q_len, REP, torch.float32), scaling=0.3, tree=tree)
    assert torch.allclose(got, before, atol=1e-5)


@pytest.mark.parametrize("q_len", [1, 2])
def test_small_query_attention_over_the_whole_buffer_equals_the_flash_kernel_on_the_filled_part(q_len):
    torch.manual_seed(1)
    b, filled, capacity = 3, 6, 10
    layer = GrowingLayer(capacity)
    layer.update(torch.randn(b, KV, filled, D), torch.randn(b, KV, filled, D))
    assert layer._k[:, :, filled:].abs().sum() == 0  # the unfilled capacity is zeros, never garbage
    m2d = torch.ones(b, filled, dtype=torch.long)
    m2d[0, :2] = 0  # row 0 left-padded
    mask = own_mask(m2d, q_len, REP, torch.float32)
    q = torch.randn(b, KV, REP * q_len, D)
    o, lse = small_query_attention(q, layer._k, layer._v, mask, filled, 0.3)
    want_o, want_lse = _FLASH(q, layer.keys, layer.values, attn_mask=mask, scale=0.3)[:2]
    assert torch.allclose(o, want_o, atol=1e-5) and torch.allclose(lse, want_lse, atol=1e-5)


def test_own_mask_is_causal_with_padding_and_repeated_per_query_head():
    m = own_mask(torch.tensor([[0, 1, 1]]), 3, 2, torch.float32)
    allowed = (m[0, 0] == 0).int().tolist()
    # queries: the padding (sees itself only), then two real tokens (causal, padding hidden); twice, one per head
    assert allowed == [[1, 0, 0], [0, 1, 0], [0, 1, 1]] * 2
    # one new token: every real position, no repetition needed (broadcast)
    assert own_mask(torch.tensor([[0, 1, 1, 1]]), 1, 3, torch.float32).shape == (1, 1, 1, 4)


def test_level_saving_and_rows():
    keys = [torch.zeros(3, KV, 10, D)]
    level = Level(keys, keys, None, torch.tensor([0, 0, 1, 1, 1, -1, 2]))
    # 6 rows in 3 groups read 3 copies of 10 tokens instead of 6
    assert level.saving() == (6 - 3) * 10
    sub = level.select(torch.tensor([2, 4, 5]))  # rows of group 1 and a row without a stretch: groups 0, 2 drop
    assert sub.keys[0].shape[0] == 1 and sub.group_of.tolist() == [0, 0, -1] and sub.missing
    assert level.select(torch.tensor([5])) is None


def test_length_chunks_by_hand():
    from metareward.engines.decoding import CHUNK_COST_TOKENS, length_chunks

    assert CHUNK_COST_TOKENS == 64
    # two long and two short rows: {200, 190} padded to 200 and {12, 10} to 12 cost 400 + 24 + 2 x 64 = 552,
    # one chunk 4 x 200 + 64 = 864
    assert length_chunks([10, 200, 12, 190]) == [[1, 3], [2, 0]]
    # close lengths: one chunk (300 + 64) beats splitting (at least 2 x 64 more for 3 tokens of padding)
    assert length_chunks([99, 100, 98]) == [[1, 0, 2]]
    # at most 250 padded tokens per chunk: the row longer than the cap alone, the other three in a pair and a single
    # (without the cap, one chunk of all four costs 4 x 300 + 64 against 300 + 300 + 3 x 64)
    chunks = length_chunks([100, 100, 100, 300], max_tokens=250)
    assert chunks[0] == [3] and sorted(map(len, chunks[1:])) == [1, 2] and sorted(sum(chunks, [])) == [0, 1, 2, 3]
    assert length_chunks([100, 100, 100, 300]) == [[3], [0, 1, 2]]


def test_chunk_tokens_keeps_the_widest_activation_under_the_mmap_ceiling():
    from metareward.engines.decoding import ACTIVATION_BYTES, chunk_tokens

    def model(intermediate, hidden, dtype):
        cfg = types.SimpleNamespace(intermediate_size=intermediate, hidden_size=hidden)
        return types.SimpleNamespace(config=types.SimpleNamespace(get_text_config=lambda: cfg),
                                     parameters=lambda: iter([torch.zeros(1, dtype=dtype)]))

    assert ACTIVATION_BYTES == 30 << 20
    assert chunk_tokens(model(1536, 576, torch.bfloat16)) == (30 << 20) // (1536 * 2) == 10240  # SmolLM2-135M
    assert chunk_tokens(model(1536, 576, torch.float32)) == (30 << 20) // (1536 * 4)
    assert chunk_tokens(model(512, 2048, torch.bfloat16)) == (30 << 20) // (2048 * 4)  # RMSNorm's fp32 copy


def test_growing_layer_writes_in_place_and_selects_rows():
    layer = GrowingLayer(capacity=5)
    k = torch.arange(2 * 1 * 3 * 2, dtype=torch.float32).reshape(2, 1, 3, 2)
    keys, values = layer.update(k, -k)
    assert keys.shape == (2, 1, 3, 2) and layer.get_seq_length() == 3
    step = torch.full((2, 1, 1, 2), 9.0)
    keys, _ = layer.update(step, step)
    assert keys.shape == (2, 1, 4, 2) and torch.equal(keys[:, :, :3], k) and torch.equal(keys[:, :, 3], step[:, :, 0])
    layer.batch_select_indices(torch.tensor([1]))
    assert torch.equal(layer.keys, torch.cat([k[1:], step[1:]], dim=2))
    layer.update(step[:1], step[:1])
    with pytest.raises(RuntimeError, match="KV cache full"):
        layer.update(step[:1], step[:1])


def test_growing_layer_drops_rows_by_moving_the_last_ones_into_the_freed_slots():
    layer = GrowingLayer(capacity=4)
    k = torch.arange(4 * 1 * 2 * 1, dtype=torch.float32).reshape(4, 1, 2, 1)  # row r holds 2r, 2r+1
    layer.update(k, -k)
    base = layer._k.data_ptr()
    layer.batch_select_indices(torch.tensor([0, 3, 2]))  # row 1 ended: row 3 moves into its slot
    assert layer._k.data_ptr() == base and layer._k.is_contiguous()  # narrowed in place, no new buffer
    assert torch.equal(layer.keys, k[[0, 3, 2]]) and torch.equal(layer.values, -k[[0, 3, 2]])
    layer.batch_select_indices(torch.tensor([2, 0]))  # a source inside the kept rows: a plain gather
    assert torch.equal(layer.keys, k[[2, 0]])


def test_shared_prefix_attention_switches_back_when_the_last_block_closes():
    """Concurrent batches share the model: a block closing while another is open must not switch it back."""
    from types import SimpleNamespace

    from metareward.engines.shared_prefix import NAME, shared_prefix_attention

    model = SimpleNamespace(config=SimpleNamespace(_attn_implementation="sdpa"))
    a, b = shared_prefix_attention(model), shared_prefix_attention(model)
    a.__enter__()
    b.__enter__()
    a.__exit__(None, None, None)
    assert model.config._attn_implementation == NAME
    b.__exit__(None, None, None)
    assert model.config._attn_implementation == "sdpa"
