"""The CPU engine's own decode loop (over the usual ~400 lines on purpose: the loop, its sampling and its per-row
random streams read together), and `own_decoder`, which picks it or HF ``generate``: on a small CPU it runs
batched generation several times faster than batched ``model.generate`` at its best batch size (measured:
bench/README.md, "Figures behind code choices").

Profiling ``generate`` on SmolLM2-135M showed half of each step outside the model: a full-vocabulary sort for
top-p and ``torch.multinomial``'s exponential draws over the whole vocabulary (measured: bench/README.md, "Figures
behind code choices"). So this loop

- samples top-p from the 256 most likely tokens (``topk`` is cheap) and falls back to a full sort only for the
  rare rows whose nucleus is wider than that, with one uniform draw per row (inverse CDF), so the result is exact
  nucleus sampling, not an approximation;
- encodes tokens shared by several prompts once, and a prompt once for its n samples, and attends to one copy
  of them (`metareward.engines.shared_prefix`: a prefix tree of the batch, cascade attention);
- keeps the KV cache in buffers allocated once per batch (``GrowingLayer``) instead of concatenating every step;
- drops finished rows from the batch (and the cache) once the steps they would still ride along for outweigh the
  copy, so long answers do not carry the dead weight of short ones;
- reads the logits of the last position only (``logits_to_keep=1``), also at prefill.

Imports torch and transformers at module level: only the transformers engine imports this module, lazily.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable

import torch

from metareward.engines.shared_prefix import (Level, TreeCache, own_mask, padding_mask, prefix_tree, select_levels,
                                              shared_prefix_attention, shared_switch)

log = logging.getLogger(__name__)

# In decoding, shared levels sparing fewer row-tokens of reading than this are copied into the rows' own keys.
INLINE_BELOW = 4096
# Top-p is taken over this many most likely tokens; rows whose nucleus is wider fall back to a full sort.
CANDIDATES = 256
# Finished rows are dropped from the batch once the steps they would still ride along for, summed over them, reach
# this many. A drop moves the last live rows into the freed slots (`fill_order`), so it copies only as many rows'
# KV cache as ended; it pays once a few row-steps are spared (measured: bench/README.md, "Figures behind code
# choices").
COMPACT_ROW_STEPS = 4


# The output head's vocabulary is multiplied in slices of this many rows (see `output_head_in_slices`).
HEAD_SLICE = 512


def _sliced_linear(head: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """``head(x)``, the output rows computed HEAD_SLICE vocabulary entries at a time."""
    w = head.weight
    if torch.is_grad_enabled() and w.requires_grad:  # (out= products are not differentiable)
        return torch.nn.functional.linear(x, w, head.bias)
    flat = x.reshape(-1, x.shape[-1])
    out = flat.new_empty((flat.shape[0], w.shape[0]))
    for i in range(0, w.shape[0], HEAD_SLICE):
        torch.mm(flat, w[i:i + HEAD_SLICE].t(), out=out[:, i:i + HEAD_SLICE])
    if head.bias is not None:
        out += head.bias
    return out.view(*x.shape[:-1], w.shape[0])


@contextlib.contextmanager
def output_head_in_slices(model):
    """Inside, the model's output head (the vocabulary projection) runs as products over slices of HEAD_SLICE
    vocabulary rows, where that was measured faster: float32 weights on a CPU, one compute thread.

    Why: one product of a few rows of hidden states with SmolLM2's 49152 x 576 tied embedding ran far below the
    CPU's matrix speed, while slices of 512 rows, whose weights stay in the core's L2 cache with the rows, ran
    faster at every row count tried (measured: bench/README.md, "Figures behind code choices"). The head is a fifth
    of SmolLM2's weights, read once per decoding step.
    Threads decoding batches of one model share the switch: the class's forward comes back when the last leaves.
    """
    head = model.get_output_embeddings()
    if (not isinstance(head, torch.nn.Linear) or head.weight.device.type != "cpu"
            or head.weight.dtype != torch.float32 or torch.get_num_threads() != 1
            or head.out_features < 4 * HEAD_SLICE):
        yield
        return

    def switch_on():
        head.forward = lambda x: _sliced_linear(head, x)
        return lambda: delattr(head, "forward")  # the instance attribute: nn.Linear.forward again

    with shared_switch((id(head), "sliced head"), switch_on):
        yield


def cache_kwarg(model) -> str:
    """transformers renamed the forward argument ``past_key_values`` to ``cache`` during 5.x: use the model's."""
    import inspect

    # the class's forward, not the instance attribute (which a test or a hook may have wrapped)
    return "cache" if "cache" in inspect.signature(type(model).forward).parameters else "past_key_values"


# ------------------------------------------------------------------------------------------------ sampling


def _pick(probs: torch.Tensor, top_p: float, u: torch.Tensor) -> torch.Tensor:
    """Index drawn from the nucleus of each row of ``probs`` (true probabilities, sorted descending), by inverse
    CDF at the row's uniform ``u`` [B, 1] in [0, 1).

    The nucleus is the shortest head whose mass reaches ``top_p``: a token is kept when the mass before it is
    below ``top_p`` (so the token that crosses the threshold is kept, as in transformers' TopPLogitsWarper).
    """
    cum = probs.cumsum(-1)
    kept = torch.where(cum - probs < top_p, probs, torch.zeros_like(probs)).cumsum(-1)
    return torch.searchsorted(kept, u * kept[:, -1:]).squeeze(1).clamp_(max=probs.shape[1] - 1)


def nucleus_sample(logits: torch.Tensor, temperature: float, top_p: float, uniforms: torch.Tensor | None,
                   candidates: int = CANDIDATES) -> torch.Tensor:
    """One token per row of ``logits`` [B, V]: greedy when ``temperature <= 0`` (``uniforms`` unused, may be
    None), else temperature + top-p, row b drawn by inverse CDF at ``uniforms[b]`` ([B, 1], each in [0, 1)).

    The caller supplies the uniforms so each row can draw from its own random stream (`row_uniforms`)."""
    if temperature <= 0:
        return logits.argmax(-1)
    if uniforms is None:
        raise ValueError("sampling (temperature > 0) needs one uniform per row")
    u = uniforms.to(device=logits.device, dtype=torch.float32)
    x = logits.float() / temperature
    log_z = torch.logsumexp(x, -1, keepdim=True)
    if top_p >= 1.0:  # the whole vocabulary: inverse CDF, no sort needed
        probs = (x - log_z).exp()
        return torch.searchsorted(probs.cumsum(-1), u * probs.sum(-1, keepdim=True)).squeeze(1).clamp_(
            max=x.shape[1] - 1)
    c = min(candidates, x.shape[-1])
    top_x, top_i = x.topk(c, dim=-1)  # sorted, most likely first
    top_p_probs = (top_x - log_z).exp()
    tokens = top_i.gather(1, _pick(top_p_probs, top_p, u)[:, None]).squeeze(1)
    wide = top_p_probs.sum(-1) < top_p  # the nucleus does not fit in the candidates: sort those rows fully
    if bool(wide.any()):
        rows = wide.nonzero().squeeze(1)
        sx, si = x[rows].sort(-1, descending=True)  # (the row's same uniform: its first pick is discarded)
        tokens[rows] = si.gather(1, _pick((sx - log_z[rows]).exp(), top_p, u[rows])[:, None]).squeeze(1)
    return tokens


def row_seeds(seeds: list[int], repeats: int) -> list[int]:
    """The stream of each row: sample ``j`` of prompt ``r`` (row ``r * repeats + j``) draws from ``seeds[r] + j``
    (vLLM's rule, `metareward.engines.base`).

    >>> row_seeds([10, 20], 2)
    [10, 11, 20, 21]
    """
    return [s + j for s in seeds for j in range(repeats)]


def row_uniforms(seeds: list[int], steps: int, device=None) -> torch.Tensor:
    """[len(seeds), steps]: row r's uniform at decode step t is the t-th draw of a CPU ``torch.Generator`` seeded
    with ``seeds[r]``, so a row's randomness depends on its own seed and step only (not on its batch or the rows
    beside it). Drawn up front: one table is cheaper than one generator call per row and step, and identical."""
    table = torch.empty((len(seeds), steps))
    for r, s in enumerate(seeds):
        torch.rand(steps, generator=torch.Generator().manual_seed(s), out=table[r])
    return table.to(device) if device is not None else table


# ------------------------------------------------------------------------------------------------ decode


def left_pad(seqs: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """input_ids, attention_mask, position_ids for left-padded sequences."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for r, s in enumerate(seqs):
        ids[r, width - len(s):] = torch.tensor(s, dtype=torch.long)
        mask[r, width - len(s):] = 1
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    return ids.to(device), mask.to(device), pos.to(device)


def _heads(model) -> int:
    """Query heads per key/value head (grouped-query attention)."""
    cfg = model.config.get_text_config()
    return cfg.num_attention_heads // (getattr(cfg, "num_key_value_heads", None) or cfg.num_attention_heads)


def _forward(model, ids: torch.Tensor, mask2d: torch.Tensor, pos: torch.Tensor, cache: TreeCache) -> torch.Tensor:
    """Last-position logits of ``ids`` [B, Q] fed after what ``cache`` holds; ``mask2d`` [B, own + Q] covers the
    rows' own positions (the levels carry their own masks)."""
    mask = own_mask(mask2d, ids.shape[1], _heads(model), cache_dtype(model))
    return model(input_ids=ids, attention_mask=mask, position_ids=pos, **{cache_kwarg(model): cache},
                 use_cache=True, logits_to_keep=1, tree=cache).logits[:, -1]


def cache_dtype(model) -> torch.dtype:
    return next(model.parameters()).dtype


# Rows whose tokens run in one forward pass are padded to the longest of them, and padding costs as much as real
# tokens; the own tails left after the shared levels vary (a meta-judge row in a level-2 pair keeps ~120 tokens,
# one alone ~225). Each extra pass costs about this many tokens' worth (30 layers of small-op overhead, measured
# on SmolLM2 with 2 cores: ~40 ms against ~0.6 ms of matrix products per token).
CHUNK_COST_TOKENS = 64
# Activations of one forward pass are kept under this size: glibc maps larger buffers fresh and page-faults them on
# every allocation (on this CPU a 39 MB copy took 14 ms into a new buffer against 2.7 ms into a reused one), while
# smaller ones are reused from the heap (`metareward.engines.memory.keep_freed_memory` raises the
# mmap threshold to its 32 MiB ceiling). Matrix products lose nothing at a few thousand rows.
ACTIVATION_BYTES = 30 << 20


def chunk_tokens(model) -> int:
    """Most tokens per forward pass: the widest activation (the MLP's intermediate in the model's dtype, or the
    fp32 copy RMSNorm makes of the hidden state) under ACTIVATION_BYTES; 10240 for SmolLM2-135M in bf16."""
    cfg = model.config.get_text_config()
    width = max(getattr(cfg, "intermediate_size", 0) * cache_dtype(model).itemsize, cfg.hidden_size * 4)
    return max(256, ACTIVATION_BYTES // width)


def length_chunks(lengths: list[int], max_tokens: int | None = None) -> list[list[int]]:
    """Row indices in chunks (longest first) minimising padded tokens + CHUNK_COST_TOKENS per chunk, each chunk at
    most ``max_tokens`` padded tokens (or one row; None: no cap): an exact dynamic programme over the rows sorted
    by length (a chunk is a run of that order)."""
    order = sorted(range(len(lengths)), key=lambda r: -lengths[r])
    n = len(order)
    best = [0.0] + [float("inf")] * n  # best[i]: cost of chunking the i longest rows
    cut = [0] * (n + 1)
    for i in range(1, n + 1):
        for j in range(i):  # the last chunk holds sorted rows j..i-1, padded to the longest, row j
            if max_tokens is not None and i - j > 1 and (i - j) * lengths[order[j]] > max_tokens:
                continue
            cost = best[j] + (i - j) * lengths[order[j]] + CHUNK_COST_TOKENS
            if cost < best[i]:
                best[i], cut[i] = cost, j
    chunks, i = [], n
    while i > 0:
        chunks.append(order[cut[i]:i])
        i = cut[i]
    return chunks[::-1]


def _encode_rows(model, parts: list[list[int]], start: list[int], levels: list[Level], pad_id: int, extra: int):
    """Run ``parts`` (row r's tokens, at positions from ``start[r]``) over the shared ``levels``, in chunks of
    similar length; returns the rows' KV layers left-aligned into one buffer of width max(len) + ``extra``, the
    own-token mask [R, width], the last-position logits and each row's last position."""
    device = next(model.parameters()).device
    n_layers = model.config.get_text_config().num_hidden_layers
    width = max(len(p) for p in parts)
    own = TreeCache(n_layers, width + extra).layers
    mask = torch.zeros((len(parts), width), dtype=torch.long, device=device)
    last = torch.zeros(len(parts), dtype=torch.long, device=device)
    logits = None
    for chunk in length_chunks([len(p) for p in parts], chunk_tokens(model)):
        idx = torch.tensor(chunk, device=device)
        ids, m, pos = left_pad([parts[r] for r in chunk], pad_id, device)
        pos = pos + torch.tensor([start[r] for r in chunk], device=device)[:, None]
        w = ids.shape[1]
        run = TreeCache(n_layers, w, select_levels(levels, idx))
        out = _forward(model, ids, m, pos, run)
        if logits is None:
            logits = out.new_empty((len(parts), out.shape[-1]))
            for layer, theirs in zip(own, run.layers):  # the buffer takes the model's KV shape and dtype
                b, kv, _, d = theirs.keys.shape
                # (zeros: rows of shorter chunks leave their first positions unwritten)
                layer.lazy_initialization(theirs.keys.new_empty((len(parts), kv, 1, d)),
                                          theirs.values.new_empty((len(parts), kv, 1, d)))
                layer.length = width
                layer._views()
        logits[idx] = out
        for layer, theirs in zip(own, run.layers):
            layer._k[idx, :, width - w: width] = theirs.keys
            layer._v[idx, :, width - w: width] = theirs.values
        mask[idx, width - w:] = m
        last[idx] = pos[:, -1]
    return own, mask, logits, last


def prefill(model, seqs: list[list[int]], pad_id: int, capacity_extra: int):
    """Run the prompts through the model; returns (cache, last-position logits, own-token mask, last position).

    Tokens shared by several prompts are computed once (`metareward.engines.shared_prefix.prefix_tree`): level by
    level, each group's stretch runs once over the levels above it, and its keys and values become a `Level` of
    the cache; then each row's own tokens run over all levels. Rows run in chunks of similar length, left-padded;
    positions count a row's real tokens only, so each row sees exactly its own prompt.
    """
    n_layers = model.config.get_text_config().num_hidden_layers
    specs, offset = prefix_tree(seqs)
    cache = TreeCache(n_layers, 0)
    done = [0] * len(seqs)  # tokens of each row in the levels so far
    with shared_prefix_attention(model), output_head_in_slices(model):
        for spec in specs:
            # the groups of this level are the rows of its batch; each takes the levels above from its first row
            first = [spec.group_of.index(g) for g in range(len(spec.stretches))]
            above = select_levels(cache.levels, torch.tensor(first))
            layers, mask, _, _ = _encode_rows(model, spec.stretches, [done[r] for r in first], above, pad_id, 0)
            cache.levels.append(Level([layer.keys for layer in layers], [layer.values for layer in layers],
                                      padding_mask(mask, cache_dtype(model)), torch.tensor(spec.group_of)))
            done = [n + (len(spec.stretches[g]) if g >= 0 else 0) for n, g in zip(done, spec.group_of)]
        cache.layers, mask, logits, last = _encode_rows(model, [s[done[r]:] for r, s in enumerate(seqs)], done,
                                                        cache.levels, pad_id, capacity_extra)
    return cache, logits, mask, last


def fill_order(live: torch.Tensor) -> torch.Tensor:
    """The rows to keep, as indices into the batch: the live rows among the first n (n = live rows) stay in their
    slots, and the slots of ended rows among them take the live rows beyond n, in order.

    [live, ended, live, live, ended, live] -> [0, 5, 2, 3]: only row 5 moves (`GrowingLayer.batch_select_indices`).
    """
    n = int(live.sum())
    order = torch.arange(live.numel(), device=live.device)
    keep = order[:n].clone()
    holes = (~live[:n]).nonzero().squeeze(1)
    keep[holes] = order[n:][live[n:]]
    return keep


def _score_rows(model, cache: TreeCache, idx: torch.Tensor, feed: torch.Tensor, mask: torch.Tensor,
                last: torch.Tensor, choice_ids: list[int]) -> torch.Tensor:
    """Log-probs of the choice tokens after feeding ``feed`` [len(idx), q] to the rows ``idx`` of the batch,
    on a copy of their own cache (the batch goes on unchanged; the shared levels are not copied)."""
    sub = cache.select(idx)
    q = feed.shape[1]
    sub_mask = torch.cat([mask[idx], mask.new_ones((idx.numel(), q))], dim=1)
    pos = last[idx, None] + 1 + torch.arange(q, device=feed.device)[None]
    logits = _forward(model, feed, sub_mask, pos, sub)
    return torch.log_softmax(logits.float(), dim=-1)[:, choice_ids]


@torch.inference_mode()
def decode(model, prompts: list[list[int]], repeats: int, *, max_new_tokens: int, temperature: float,
           top_p: float, stop_ids: list[int], pad_id: int, seeds: list[int] | None = None,
           score_suffix: list[int] | None = None, score_choices: list[int] | None = None,
           on_rows_done: Callable[[int], None] | None = None):
    """``repeats`` samples for each tokenised prompt; rows ``r*repeats .. r*repeats+repeats-1`` belong to prompt
    ``r``. Each row's tokens end before its first stop token (or after ``max_new_tokens``); the stop token is
    kept as the last token when one was produced, so callers can tell "stop" from "length".

    ``seeds`` (one per prompt; needed when ``temperature > 0``): sample ``j`` of prompt ``r`` draws one uniform
    per step from its own stream ``seeds[r] + j`` (`row_seeds`, `row_uniforms`); the draws follow the row when
    finished rows are dropped. Greedy draws nothing.

    With ``score_suffix`` and ``score_choices`` (token ids), each row is also scored where it ends: the suffix
    (e.g. "\nScore: ") is fed after the row's own tokens, on the KV cache it already has, and the log-probs of
    the choice tokens read. That replaces a second prefill of prompt + answer (the judge's expected score).
    Returns (tokens, log-probs) then; tokens alone otherwise.

    ``on_rows_done(k)`` is called (in this thread) as ``k`` rows end, so a progress bar can move while the batch
    decodes; the calls add up to the number of rows."""
    device = next(model.parameters()).device
    scoring = score_suffix is not None and score_choices is not None
    if temperature > 0 and (seeds is None or len(seeds) != len(prompts)):
        raise ValueError(f"sampling needs one seed per prompt, got {seeds!r} for {len(prompts)} prompts")
    draws = row_uniforms(row_seeds(seeds, repeats), max_new_tokens, device) if temperature > 0 else None
    extra = max_new_tokens + (len(score_suffix) + 1 if scoring else 0)
    cache, logits, mask, last = prefill(model, prompts, pad_id, extra)
    if repeats > 1:  # one prefill per prompt; its n samples read it as a shared level of the cache
        rows = torch.arange(len(prompts)).repeat_interleave(repeats)
        cache.push_level(mask, rows, extra)
        logits, last = (t.repeat_interleave(repeats, dim=0) for t in (logits, last))
        mask = mask.new_zeros((len(rows), 0))
    mask = cache.inline_small_levels(mask, INLINE_BELOW)

    n_rows = logits.shape[0]
    stop = torch.tensor(stop_ids, device=device)
    out = torch.full((n_rows, max_new_tokens), pad_id, dtype=torch.long, device=device)
    length = torch.full((n_rows,), max_new_tokens, dtype=torch.long)
    scores: list[list[float] | None] = [None] * n_rows
    suffix = torch.tensor([score_suffix or [0]], device=device)
    rows = torch.arange(n_rows, device=device)  # the original row of each live batch row
    live = torch.ones(n_rows, dtype=torch.bool, device=device)
    reported = 0  # rows passed to on_rows_done

    def score(idx: torch.Tensor, feed: torch.Tensor) -> None:
        if idx.numel():
            lp = _score_rows(model, cache, idx, feed, mask, last, score_choices).tolist()
            for r, vals in zip(rows[idx].tolist(), lp):
                scores[r] = vals

    with shared_prefix_attention(model), output_head_in_slices(model):
        for step in range(max_new_tokens):
            u = None if draws is None else draws[rows, step].unsqueeze(1)  # each live row's own draw
            tok = nucleus_sample(logits, temperature, top_p, u)
            out[rows, step] = tok
            ended = live & torch.isin(tok, stop)
            if scoring:  # score rows now, before their cache moves on: stopped rows, and all live rows at the end
                score(ended.nonzero().squeeze(1), suffix.expand(int(ended.sum()), -1))
                if step + 1 == max_new_tokens:
                    tail = (live & ~ended).nonzero().squeeze(1)  # the last sampled token is not in the cache yet
                    score(tail, torch.cat([tok[tail, None], suffix.expand(tail.numel(), -1)], dim=1))
            if bool(ended.any()):
                length[rows[ended].cpu()] = step + 1
                if on_rows_done is not None:
                    k = int(ended.sum())
                    reported += k
                    on_rows_done(k)
                live &= ~ended
                if not bool(live.any()):
                    break
                if int((~live).sum()) * (max_new_tokens - step - 1) >= COMPACT_ROW_STEPS:
                    keep = fill_order(live)
                    cache.batch_select_indices(keep)
                    tok, mask, last, rows = tok[keep], mask[keep], last[keep], rows[keep]
                    live = torch.ones(keep.numel(), dtype=torch.bool, device=device)
            if step + 1 == max_new_tokens:
                break
            mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)
            last = last + 1
            logits = _forward(model, tok[:, None], mask, last[:, None], cache)
    if on_rows_done is not None and n_rows > reported:  # the rows that ran to max_new_tokens
        on_rows_done(n_rows - reported)
    out_cpu = out.cpu()
    tokens = [out_cpu[r, : int(length[r])].tolist() for r in range(n_rows)]
    return (tokens, scores) if scoring else tokens


# Why 'auto' picks each decode loop, logged when an engine opens.
_DECODER_WHY = {
    "cpu": "ours ran several times faster than batched HF generate on every CPU host class benched "
           "(measured: bench/README.md, \"Figures behind code choices\")",
    "cuda": "HF generate ran faster on a GPU, where a full-vocabulary sort is cheap and our loop's host syncs "
            "stall it (measured: bench/README.md, \"Figures behind code choices\")",
}


def own_decoder(decoder: str, device_type: str) -> bool:
    """Whether to decode with our own loop: 'own' or 'generate' as asked; 'auto' takes the one measured faster on
    this kind of device (ours on a CPU, HF generate elsewhere) and logs why.

    >>> own_decoder("auto", "cpu"), own_decoder("auto", "cuda"), own_decoder("generate", "cpu")
    (True, False, False)
    """
    if decoder not in ("auto", "own", "generate"):
        raise ValueError(f"decoder must be auto, own or generate, got {decoder!r}")
    if decoder != "auto":
        return decoder == "own"
    mine = device_type == "cpu"
    log.info("decoder auto -> %s on %s: %s", "own" if mine else "generate", device_type,
             _DECODER_WHY.get(device_type, _DECODER_WHY["cuda"]))
    return mine
