"""How close the engine's decoding comes to what the CPU's matrix products alone reach (issue 25, item 3).

A decode step of a small model is mostly matrix products of the batch's rows with every layer's weights, so the
products' own rate at the batch's row count is the ceiling for tokens per second:

- `flops_per_token`: FLOPs of those products for one token, 2 x (the weights of every ``nn.Linear`` in the model,
  the output head included, tied or not). SmolLM2-135M: 2 x (106.2M + 28.3M) = 269 MFLOP. Attention over the
  cache, norms and sampling are left out: they are what the ceiling does not count, so a decode loop's
  GFLOP/s reads as the share of the time spent in products at the products' own rate.
- `matmul_ceiling`: ``torch.nn.functional.linear`` over 30 distinct 576 x 1536 weights (a decode step's shape:
  one weight per product, as a step streams them, so no weight stays in cache between calls), in the engine's
  dtype, with the process's torch threads, at 32, 64 and 128 rows. GFLOP/s per row count and the best.

torch is imported inside the functions (bench.py imports this module in its parent process too).
"""

from __future__ import annotations

import time

ROWS = (32, 64, 128)
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


def matmul_ceiling(dtype: str, rows: tuple[int, ...] = ROWS, seconds: float = 1.0) -> dict:
    """GFLOP/s of ``F.linear`` at each row count (the best of three timed passes of at least ``seconds`` / 3 each),
    in ``dtype`` on the process's torch threads; ``best`` is the highest."""
    import torch

    dt = getattr(torch, dtype)
    gen = torch.Generator().manual_seed(0)
    weights = [torch.randn(*SHAPE, generator=gen).to(dt) for _ in range(N_WEIGHTS)]
    out: dict = {"dtype": dtype, "threads": torch.get_num_threads(), "shape": f"{SHAPE[1]} x {SHAPE[0]}",
                 "weights": N_WEIGHTS, "gflops": {}}
    with torch.inference_mode():
        for n in rows:
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
    out["best"] = max(out["gflops"].values())
    return out


def achieved(tok_per_s: float, flops: int, ceiling_gflops: float) -> dict:
    """Product GFLOP/s of a decode rate, and its share of the ceiling.

    >>> achieved(500.0, 268_000_000, 326.0)
    {'gflops': 134.0, 'of_ceiling': 0.41}
    """
    g = tok_per_s * flops / 1e9
    return {"gflops": round(g, 1), "of_ceiling": round(g / ceiling_gflops, 2) if ceiling_gflops else None}
