"""How many users the recommender's dense (users x items) steps take at scale.

The user caps of :class:`~training.recommender.RecommenderModel` (ranker rows, validation,
precomputed lists) shrink on big catalogues to ``cells // items`` (:func:`cell_cap`; never on
Online Retail), and the users kept are a seeded random sample (:func:`capped_sample`).
"""

from __future__ import annotations

import numpy as np

#: dense (users x items) work allowed per ranker cutoff, for validation and for the precomputed
#: lists: on a big catalogue the user caps shrink to ``cells // items`` (never on Online Retail)
RANKER_CELLS = 150_000_000
VALIDATION_CELLS = 100_000_000
PRECOMPUTE_CELLS = 200_000_000


def cell_cap(cap: int | None, cells: int, n_items: int) -> int | None:
    """``cap`` users, or fewer so that users x ``n_items`` stays within ``cells``; None: no cap."""
    if cap is None:
        return None
    return int(max(1, min(cap, cells // max(n_items, 1))))


def capped_sample(n: int, cap: int | None, seed: int | list[int]) -> np.ndarray:
    """Sorted positions ``0..n-1``: all of them, or ``cap`` drawn without replacement."""
    if cap is None or n <= cap:
        return np.arange(n, dtype=np.int64)
    return np.sort(np.random.default_rng(seed).choice(n, size=cap, replace=False)).astype(np.int64)
