"""How close the engine's decoding comes to what the CPU's matrix products alone reach (issue 25, item 3).

A decode step of a small model is mostly matrix products of the batch's rows with every layer's weights, so the
products' own rate at the batch's row count is the ceiling for tokens per second:

- `flops_per_token`: FLOPs of those products for one token, 2 x (the weights of every ``nn.Linear`` in the model,
  the output head included, tied or not). SmolLM2-135M: 2 x (106.2M + 28.3M) = 269 MFLOP. Attention over the
  cache, norms and sampling are left out: they are what the ceiling does not count, so a decode loop's
  GFLOP/s reads as the share of the time spent in products at the products' own rate.
- `matmul_ceiling`: ``torch.nn.functional.linear`` over 30 distinct 576 x 1536 weights (a decode step's shape:
  one weight per product, as a step streams them, so no weight stays in cache between calls), in the engine's
  dtype, with the process's torch threads, at 32, 64 and 128 rows (decode batches) and at 1024 (a prefill chunk's
  width). GFLOP/s per row count, the best of the decode widths (``best``) and the prefill one (``prefill``).
- `distinct_prefix_tokens` and `stage_bound`: the tokens/s a stage would reach if every product ran at that ceiling
  and nothing else took time: the generated tokens at the decode ceiling for the stage's rows plus the prompts'
  distinct tokens (each shared prefix computed once, as prefix caching or our shared-prefix tree does) at the
  prefill one. The bench's meta-judge prompts hold 3.6x the distinct tokens it writes (19,759 against 5,456), so
  the generated tokens alone say little of what its time buys; and the bound over a peer's rate is the most any
  engine could be faster than that peer on this CPU (a 3x goal is out of reach where it is under 3).

torch is imported inside the functions (bench.py imports this module in its parent process too).
"""

from __future__ import annotations

import time

from metareward.engines.tokens import common_prefix_len

ROWS = (32, 64, 128)
PREFILL_ROWS = 1024
SHAPE, N_WEIGHTS = (1536, 576), 30  # (out, in): SmolLM2's MLP up-projection, the most common decode product


def flops_per_token(model) -> int:
    """2 x the weights of every linear layer and of the output head (counted once when tied to the embedding).

    >>> import torch
    >>> m = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2, bias=False))
    >>> flops_per_token(m)  # 2 x (12 + 6)
    36
    """
    import torch

    seen, total = set(), 0
    for module in model.modules():
        if isinstance(module, torch.nn.Linear) and id(module.weight) not in seen:
            seen.add(id(module.weight))
            total += module.weight.numel()
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is not None and id(head.weight) not in seen:  # a head that is no nn.Linear (tied or not)
        total += head.weight.numel()
    return 2 * total


def matmul_ceiling(dtype: str, rows: tuple[int, ...] = ROWS, seconds: float = 1.0,
                   prefill_rows: int | None = PREFILL_ROWS) -> dict:
    """GFLOP/s of ``F.linear`` at each row count (the best of three timed passes of at least ``seconds`` / 3 each),
    in ``dtype`` on the process's torch threads; ``best`` is the highest of ``rows``, ``prefill`` the rate at
    ``prefill_rows`` (None: not measured; the bound then uses ``best`` for prompt tokens too)."""
    import torch

    dt = getattr(torch, dtype)
    gen = torch.Generator().manual_seed(0)
    weights = [torch.randn(*SHAPE, generator=gen).to(dt) for _ in range(N_WEIGHTS)]
    out: dict = {"dtype": dtype, "threads": torch.get_num_threads(), "shape": f"{SHAPE[1]} x {SHAPE[0]}",
                 "weights": N_WEIGHTS, "gflops": {}}
    with torch.inference_mode():
        for n in rows + ((prefill_rows,) if prefill_rows else ()):
            x = torch.randn(n, SHAPE[1], generator=gen).to(dt)
            for w in weights:  # warm-up: oneDNN picks and caches its kernels on first use
                torch.nn.functional.linear(x, w)
            flop = 2 * n * SHAPE[0] * SHAPE[1] * N_WEIGHTS
            best = 0.0
            for _ in range(3):
                calls, start = 0, time.perf_counter()
                while (elapsed := time.perf_counter() - start) < seconds / 3 or calls == 0:
                    for w in weights:
                        torch.nn.functional.linear(x, w)
                    calls += 1
                best = max(best, flop * calls / elapsed / 1e9)
            out["gflops"][str(n)] = round(best, 1)
    out["best"] = max(out["gflops"][str(n)] for n in rows)
    out["prefill_rows"] = prefill_rows
    out["prefill"] = out["gflops"][str(prefill_rows)] if prefill_rows else out["best"]
    return out


def achieved(tok_per_s: float, flops: int, ceiling_gflops: float) -> dict:
    """Product GFLOP/s of a decode rate, and its share of the ceiling.

    >>> achieved(500.0, 268_000_000, 326.0)
    {'gflops': 134.0, 'of_ceiling': 0.41}
    """
    g = tok_per_s * flops / 1e9
    return {"gflops": round(g, 1), "of_ceiling": round(g / ceiling_gflops, 2) if ceiling_gflops else None}


def distinct_prefix_tokens(seqs: list[list[int]]) -> int:
    """Tokens an engine must run for these prompts when it computes each distinct prefix once: the nodes of the
    prompts' token trie (with exact causal attention a token's keys and values depend on its prefix alone).

    >>> distinct_prefix_tokens([[1, 2, 3], [1, 2, 4], [1, 2, 3], [5]])  # 1, 2, 3; 4 after 1, 2; 5
    5
    """
    total, prev = 0, []
    for s in sorted(map(list, seqs)):
        total += len(s) - common_prefix_len(prev, s)
        prev = s
    return total


def decode_ceiling(ceiling: dict, rows: int | None) -> float:
    """The products' rate a decode batch of ``rows`` rows can reach: the rate at the smallest measured row count
    not below ``rows`` (more rows only speed products up, so this bounds it from above); the best where ``rows``
    passes them all or is not given.

    >>> c = {"gflops": {"32": 80.0, "64": 103.8, "128": 132.4, "1024": 150.0}, "best": 132.4, "prefill_rows": 1024}
    >>> decode_ceiling(c, 64), decode_ceiling(c, 96), decode_ceiling(c, 384), decode_ceiling(c, None)
    (103.8, 132.4, 132.4, 132.4)
    """
    if rows is None:
        return ceiling["best"]
    decode = {int(r): g for r, g in ceiling["gflops"].items() if int(r) != ceiling.get("prefill_rows")}
    wide_enough = [g for r, g in sorted(decode.items()) if rows <= r]
    return wide_enough[0] if wide_enough else ceiling["best"]


def stage_bound(generated: int, prompt_tokens: int, flops: int, ceiling: dict, rows: int | None = None) -> dict:
    """The fastest a stage could go on this CPU: ``generated`` tokens' products at the decode ceiling for ``rows``
    rows (`decode_ceiling`) plus ``prompt_tokens`` (distinct ones) at the prefill ceiling, nothing else timed.

    1000 generated tokens at 269 MFLOP and 134.5 GFLOP/s take 2 s; 3000 prompt tokens at 161.4 GFLOP/s take 5 s:
    >>> stage_bound(1000, 3000, 269_000_000, {"gflops": {"128": 134.5}, "best": 134.5, "prefill": 161.4})
    {'seconds': 7.0, 'tok_per_s': 142.9}
    """
    secs = flops / 1e9 * (generated / decode_ceiling(ceiling, rows)
                          + prompt_tokens / ceiling.get("prefill", ceiling["best"]))
    return {"seconds": round(secs, 2), "tok_per_s": round(generated / secs, 1) if secs else None}
