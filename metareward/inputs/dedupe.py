"""Near-duplicate prompts: character-shingle Jaccard similarity, with MinHash-LSH to find the candidates.

Two texts are near-duplicates when the Jaccard similarity of their sets of character ``n``-grams ("shingles",
taken after lower-casing, dropping punctuation and collapsing whitespace) is at least ``threshold``.
Character shingles rather than word n-grams because prompts are short: one inserted word in a 7-word prompt
leaves a word-trigram Jaccard of about 0.4 but a 5-char-shingle Jaccard of about 0.75::

    "Why do cats purr"      -> "why do cats purr"     16 chars, 12 shingles of 5
    "Why do cats purr, so?" -> "why do cats purr so"  19 chars, 15 shingles; the first 12 are shared
    Jaccard = 12 / 15 = 0.8  -> a near-duplicate at the default threshold 0.7

Comparing every pair is quadratic (2e8 pairs for a 20k pool), so candidate pairs come from MinHash signatures
cut into LSH bands (Broder 1997; Leskovec, Rajaraman & Ullman, *Mining of Massive Datasets*, ch. 3), and each
candidate is then checked with the exact Jaccard similarity. So no pair below the threshold is ever called a
duplicate; a pair above it is missed only if it shares no band, with probability (1 - J^r)^b, which
`_rows_per_band` keeps below 1e-3 at the threshold. Pure Python + numpy, deterministic (fixed hash seeds).
"""

from __future__ import annotations

import re
import zlib
from collections import defaultdict

import numpy as np

_PRIME = 4294967311  # the smallest prime above 2**32: shingle hashes are 32-bit crc32 values
_NON_WORD = re.compile(r"[^\w\s]")


def normalize(text: str) -> str:
    """Lower-case, punctuation dropped, whitespace collapsed: what 'the same prompt' means here."""
    return " ".join(_NON_WORD.sub(" ", text.lower()).split())


def shingles(text: str, n: int = 5) -> set[str]:
    """Character ``n``-grams of the normalised text; a text shorter than ``n`` is its own single shingle."""
    t = normalize(text)
    if len(t) <= n:
        return {t}
    return {t[i : i + n] for i in range(len(t) - n + 1)}


def jaccard(a: set, b: set) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def _rows_per_band(threshold: float, num_perm: int, max_miss: float = 1e-3) -> int:
    """The most rows per band (fewest false candidates) whose miss probability at ``threshold`` is <= max_miss."""
    best = 1
    for r in (1, 2, 4, 8, 16):
        if num_perm % r == 0 and (1 - threshold**r) ** (num_perm // r) <= max_miss:
            best = r
    return best


class NearDuplicateIndex:
    """Texts added so far, searchable for a near-duplicate of a new text.

    ``find(text)`` returns the position (in order of `add`) of a stored text whose shingle Jaccard with ``text``
    is >= ``threshold``, or None.
    """

    def __init__(self, threshold: float = 0.7, shingle: int = 5, num_perm: int = 128, seed: int = 1):
        if not 0.0 < threshold <= 1.0:
            raise ValueError(f"near-duplicate threshold must lie in (0, 1], got {threshold}")
        self.threshold, self.shingle = threshold, shingle
        rng = np.random.default_rng(seed)
        # h_i(x) = (a_i x + b_i) mod p: a_i < 2^31 and x < 2^32 keep a_i x below 2^63, so uint64 never overflows
        self._a = rng.integers(1, 2**31, size=num_perm, dtype=np.uint64)
        self._b = rng.integers(0, 2**31, size=num_perm, dtype=np.uint64)
        self.rows = _rows_per_band(threshold, num_perm)
        self._buckets: dict[tuple[int, bytes], list[int]] = defaultdict(list)
        self._sets: list[set[str]] = []

    def _bands(self, sh: set[str]) -> list[tuple[int, bytes]]:
        x = np.fromiter((zlib.crc32(s.encode()) for s in sh), dtype=np.uint64, count=len(sh))
        sig = ((self._a[:, None] * x[None, :] + self._b[:, None]) % _PRIME).min(axis=1)
        return [(i, sig[i * self.rows : (i + 1) * self.rows].tobytes()) for i in range(len(sig) // self.rows)]

    def find(self, text: str) -> int | None:
        sh = shingles(text, self.shingle)
        seen: set[int] = set()
        for band in self._bands(sh):
            for j in self._buckets.get(band, ()):
                if j not in seen:
                    seen.add(j)
                    if jaccard(sh, self._sets[j]) >= self.threshold:
                        return j
        return None

    def add(self, text: str) -> int:
        sh = shingles(text, self.shingle)
        j = len(self._sets)
        self._sets.append(sh)
        for band in self._bands(sh):
            self._buckets[band].append(j)
        return j

    def __len__(self) -> int:
        return len(self._sets)


def near_dedupe(texts: list[str], threshold: float, shingle: int = 5,
                against: list[str] = ()) -> tuple[list[int], int, int]:
    """Which of ``texts`` to keep: the first of each group of near-duplicates, and none that is a near-duplicate
    of a text in ``against`` (e.g. the seed prompts a generated prompt was written from).

    Returns (indices kept, dropped as near-duplicates of an earlier text, dropped as near-duplicates of
    ``against``).
    """
    index = NearDuplicateIndex(threshold, shingle)
    for t in against:
        index.add(t)
    n_ref = len(index)
    keep, of_texts, of_ref = [], 0, 0
    for i, t in enumerate(texts):
        j = index.find(t)
        if j is None:
            index.add(t)
            keep.append(i)
        elif j < n_ref:
            of_ref += 1
        else:
            of_texts += 1
    return keep, of_texts, of_ref
