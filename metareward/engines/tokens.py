"""Token-list helpers the engines share, without torch: the end-of-turn markers that stop generation, the
shared prefix of two token lists, and how a context and its choices split into a common part and continuations.

    >>> common_prefix_len([1, 2, 3], [1, 2, 4, 5])
    2
    >>> split_choices([7, 8, 9], [[7, 8, 9, 1], [7, 8, 2]])
    (2, [[9, 1], [2]])
"""

from __future__ import annotations

# End-of-turn markers of common chat templates; those present in the vocabulary stop generation.
END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>", "<|end_of_turn|>", "<end_of_turn>", "<|end|>", "<|endoftext|>")


def common_prefix_len(a: list[int], b: list[int]) -> int:
    """How many leading tokens ``a`` and ``b`` share."""
    n = min(len(a), len(b))
    i = 0
    while i < n and a[i] == b[i]:
        i += 1
    return i


def split_choices(ctx_ids: list[int], choice_seqs: list[list[int]]) -> tuple[int, list[list[int]]]:
    """``k`` = the token prefix shared by the context and every ``context + choice``, and each choice's tokens
    after it. Scoring log P(continuation | first k tokens) compares the choices on the natural tokenisation of
    their text, whatever happens at the context/choice boundary. Shared by the transformers and vLLM engines."""
    k = min([len(ctx_ids)] + [common_prefix_len(ctx_ids, s) for s in choice_seqs])
    if k == 0:
        raise ValueError("context and choices share no leading token; cannot condition on the context")
    conts = [s[k:] for s in choice_seqs]
    if any(not c for c in conts):
        raise ValueError("a choice adds no token after the context")
    return k, conts
