"""Buy-again lists (the backtest's buy-again reference), without a dense users x items matrix."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp


def buy_again_lists(X: sp.csr_matrix, popularity: np.ndarray, k: int) -> np.ndarray:
    """Top-``k`` columns per row of ``X``: the row's own items by value, ties by popularity
    then column, padded with the most popular other items (``-1`` when none are left).

    Equals a stable ``argsort`` of ``-(X + 1e-6 * popularity / max)`` per dense row, without
    the dense matrix (for many users on a big catalogue).
    """
    X = sp.csr_matrix(X)
    n_rows, n_items = X.shape
    if popularity.shape != (n_items,):
        raise ValueError(f"popularity has shape {popularity.shape}, expected ({n_items},)")
    pop = 1e-6 * popularity / max(float(popularity.max(initial=0.0)), 1.0)
    pop_order = np.argsort(-pop, kind="stable")
    out = np.full((n_rows, k), -1, dtype=np.int64)
    for r in range(n_rows):
        cols = X.indices[X.indptr[r] : X.indptr[r + 1]]
        vals = X.data[X.indptr[r] : X.indptr[r + 1]] + pop[cols]
        own = cols[np.lexsort((cols, -vals))][:k]
        out[r, : len(own)] = own
        if len(own) < k:
            rest = pop_order[~np.isin(pop_order, cols)][: k - len(own)]
            out[r, len(own) : len(own) + len(rest)] = rest
    return out
