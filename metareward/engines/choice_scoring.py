"""The transformers engine's second job, apart from generating: P(choice | chat prompt + assistant prefix),
renormalised over the choices (`choice_probs`; the judge's score digits, the meta-judge's A/B).

The context and every ``context + choice`` are tokenised; ``k`` is the longest token prefix shared by all of them
(`metareward.engines.tokens.split_choices`). When each choice adds exactly one token after those ``k`` tokens,
one forward pass over the first ``k`` tokens answers every choice (the next-token softmax read at the choice
tokens; on CPU through the shared-prefix prefill, so a rubric shared by many prompts is encoded once). Otherwise
each choice's continuation is scored by its summed log-likelihood.

``torch`` is imported inside the methods.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from metareward import progress
from metareward.engines.tokens import split_choices


class ChoiceScoring:
    """Choice scoring over an engine's model and tokenizer; mixed into `TransformersEngine`, whose
    ``model``, ``tokenizer``, ``batch_size``, ``own_decoder``, ``render``, ``_encode``, ``_left_pad``, ``_check``
    and ``_has_logits_to_keep`` it uses."""

    def choice_probs(self, prompts: list[str], prefixes: list[str], choices: list[str]) -> list[list[float]]:
        return self._choice_probs(prompts, prefixes, choices, method="auto")

    def _choice_probs(
        self, prompts: list[str], prefixes: list[str], choices: list[str], *, method: str = "auto"
    ) -> list[list[float]]:
        """``method="auto"``: one forward pass when every choice is one token after the shared prefix, else the
        continuation log-likelihood. ``method="full"`` always scores full sequences (kept for tests)."""
        import math

        self._check()
        if len(prompts) != len(prefixes):
            raise ValueError(f"{len(prompts)} prompts but {len(prefixes)} prefixes")
        if not choices or any(c == "" for c in choices):
            raise ValueError("choices must be a non-empty list of non-empty strings")
        if method not in ("auto", "full"):
            raise ValueError(f"method must be 'auto' or 'full', got {method!r}")

        logp = [[0.0] * len(choices) for _ in prompts]
        single: list[tuple[int, list[int], list[int]]] = []  # (prompt index, context ids[:k], choice token ids)
        full: list[tuple[int, int, list[int], int]] = []  # (prompt index, choice index, ids, k)
        for pi, (p, pre) in enumerate(zip(prompts, prefixes)):
            ctx = self.render(p) + pre
            ctx_ids = self._encode(ctx)
            seqs = [self._encode(ctx + c) for c in choices]
            k, conts = split_choices(ctx_ids, seqs)
            if method == "auto" and all(len(c) == 1 for c in conts):
                single.append((pi, ctx_ids[:k], [c[0] for c in conts]))
            else:
                full.extend((pi, ci, s, k) for ci, s in enumerate(seqs))

        for pi, vals in self._next_token_logprobs(single):
            logp[pi] = vals
        for pi, ci, val in self._continuation_logprobs(full):
            logp[pi][ci] = val

        out = []
        for row in logp:
            top = max(row)
            w = [math.exp(x - top) for x in row]
            total = sum(w)
            out.append([x / total for x in w])
        return out

    def _forward(self, seqs: list[list[int]], keep: int):
        """Log-softmax (float32) of the last ``keep`` positions of the left-padded batch: [B, keep, V]."""
        import torch

        input_ids, mask, pos = self._left_pad(seqs)
        kwargs: dict[str, Any] = dict(input_ids=input_ids, attention_mask=mask, position_ids=pos, use_cache=False)
        if self._has_logits_to_keep:
            kwargs["logits_to_keep"] = keep
        logits = self.model(**kwargs).logits[:, -keep:, :]
        return torch.log_softmax(logits.float(), dim=-1)

    def _next_token_logprobs(self, items: list[tuple[int, list[int], list[int]]]):
        import torch

        from metareward.engines.decoding import prefill

        order = sorted(range(len(items)), key=lambda r: (items[r][1], r))  # sharers together, as in _decode
        bar = progress.tracker(len(items), "score")

        def batch(chunk):
            seqs = [ctx for _, ctx, _ in chunk]
            if self.own_decoder:  # CPU: shared stretches (the judge's rubric) encoded once (shared_prefix.py)
                _, logits, _, _ = prefill(self.model, seqs, self.tokenizer.pad_token_id, 0)
                return torch.log_softmax(logits.float(), dim=-1)
            return self._forward(seqs, keep=1)[:, -1]  # GPU: no CPU flash kernel for shared prefixes; a plain batch

        chunks = [[items[r] for r in order[start:start + self.batch_size]]
                  for start in range(0, len(order), self.batch_size)]
        for chunk, lp in zip(chunks, self._batches(batch, chunks)):
            bar.advance(len(chunk))
            for r, (pi, _, tok_ids) in enumerate(chunk):
                yield pi, lp[r, tok_ids].tolist()

    def _batches(self, fn, chunks: list):
        """``fn(chunk)`` for each chunk, in order. With two workers (a 2-core CPU) two chunks run at once, each on one
        thread, as the decode loop's batches do: a chunk's numbers then do not depend on how many threads the
        process has (in bf16, two threads over one product round differently from one), so one process of two
        threads and two replicas of one score alike."""
        import concurrent.futures

        import torch

        workers = getattr(self, "workers", 1)

        def one(chunk):
            with torch.inference_mode(), torch_threads(1) if workers > 1 else contextlib.nullcontext():
                return fn(chunk)

        if workers <= 1:
            yield from map(one, chunks)
            return
        with concurrent.futures.ThreadPoolExecutor(self.workers) as pool:
            yield from pool.map(one, chunks)

    def _continuation_logprobs(self, items: list[tuple[int, int, list[int], int]]):
        """Sum of log P(ids[t] | ids[:t]) for t >= k, per (prompt, choice)."""
        import torch

        order = sorted(range(len(items)), key=lambda r: len(items[r][2]))
        bar = progress.tracker(len(items), "score")
        chunks = [[items[r] for r in order[start:start + self.batch_size]]
                  for start in range(0, len(order), self.batch_size)]

        def batch(chunk):
            # Left padding puts every continuation at the end: the logits predicting the m continuation tokens of
            # a row are its m positions before the last one.
            keep = max(len(ids) - k for _, _, ids, k in chunk) + 1
            return keep, self._forward([ids for _, _, ids, _ in chunk], keep=keep)

        for chunk, (keep, lp) in zip(chunks, self._batches(batch, chunks)):
            bar.advance(len(chunk))
            with torch.inference_mode():
                for r, (pi, ci, ids, k) in enumerate(chunk):
                    m = len(ids) - k
                    targets = torch.tensor(ids[k:], device=lp.device)
                    rows = lp[r, keep - 1 - m: keep - 1, :]
                    yield pi, ci, float(rows.gather(-1, targets[:, None]).sum())


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Inside, this thread's torch ops use ``n`` threads (OpenMP's thread count belongs to the calling thread)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
