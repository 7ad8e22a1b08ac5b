"""95% intervals by the bootstrap: how far a figure from a few hundred prompts (or a dozen) can be trusted.

Items (prompts, pairs) are resampled with replacement; each round's figure is ``sum(numerators) / sum(denominators)``
over the drawn items (a share when every denominator is 1, IFEval's instruction-level accuracy when they are the
instructions per prompt), and the interval is the 2.5th and 97.5th percentiles of the rounds (numpy's default
linear interpolation). Seeded, so the same items give the same interval.

    >>> bootstrap([1, 1, 0, 1], rounds=1000, seed=0)
    {'value': 0.75, 'lo': 0.25, 'hi': 1.0, 'n': 4, 'rounds': 1000}
"""

from __future__ import annotations


def bootstrap(numerators: list[float], denominators: list[float] | None = None, rounds: int = 1000,
              seed: int = 0) -> dict:
    """The figure over all items, its 95% bootstrap interval, the item count and the rounds."""
    import numpy as np

    num = np.asarray(numerators, dtype=float)
    den = np.ones_like(num) if denominators is None else np.asarray(denominators, dtype=float)
    if len(num) == 0 or den.sum() == 0:
        return {"value": None, "lo": None, "hi": None, "n": len(num), "rounds": rounds}
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(num), size=(rounds, len(num)))
    with np.errstate(invalid="ignore", divide="ignore"):
        figures = num[draws].sum(axis=1) / den[draws].sum(axis=1)
    lo, hi = np.nanpercentile(figures, [2.5, 97.5])
    return {"value": round(float(num.sum() / den.sum()), 4), "lo": round(float(lo), 4), "hi": round(float(hi), 4),
            "n": len(num), "rounds": rounds}
