"""What a customer buys, in a few numbers: a low-rank embedding of the customer x item matrix.

:func:`item_vectors` fits, on the purchases strictly before ``as_of``, a truncated SVD of the
customer x item tf-idf matrix: a customer's row holds ``log(1 + orders with the item) * idf``
for each item they bought (``idf = log((1 + customers) / (1 + the item's buyers))``), scaled to
unit length. The result is, per item, its ``idf`` and its loadings on the first
:data:`EMBED_K` right singular vectors (largest singular value first; each vector's sign is
fixed so that its largest loading is positive, so a refit on more data keeps the directions'
meaning as far as the data allow). The fit reads at most :data:`MAX_FIT_CUSTOMERS` customers
(those with the smallest hash of their id string), so its cost is bounded on large shops.

:func:`embedding_features` projects each customer's unit-length row on those loadings
(``item_svd0`` ... : for a customer of the fit, their left singular vector times the singular
value). A customer's columns read their own purchases and the item vectors only, so a sample or
a partition of customers gets the rows of the whole table when handed the vectors of all
customers. NaN for every customer when the shop has too few items with buyers for the
embedding (fewer than ``EMBED_K + 2``; e.g. a one-product shop).

Validation (protocol C's Online Retail replays, paired with the models without the columns):
AUC +0.0022 (SE 0.0004, better on 6 of 6), Brier -0.00066; with LightGBM seed 1 +0.0013 (SE
0.0005, 6 of 6). See ``experiments/results/online-retail-C-diagnostics.md``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.sparse.linalg import svds

from features.purchases import Purchases
from features.schema import CUSTOMER_ID

EMBED_K = 6
EMBED_COLUMNS = [f"item_svd{j}" for j in range(EMBED_K)]
#: columns of :func:`item_vectors` (per item)
VECTOR_COLUMNS = ["idf", *[f"v{j}" for j in range(EMBED_K)]]
MAX_FIT_CUSTOMERS = 50_000
#: Reason phrases of the columns (as the artifact's PHRASES): a direction of the embedding has
#: no name a person would recognise, so each says what it stands for.
EMBED_PHRASES = {name: "the mix of products they buy" for name in EMBED_COLUMNS}


def _pairs(p: Purchases) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per distinct (customer, item) pair: customer code, item code, log(1 + orders with it)."""
    ch = p.chains
    starts = ch.pair_start
    n_orders = np.diff(np.r_[starts, len(ch.item)]).astype(np.float64)
    return ch.pair_customer, ch.item[starts], np.log1p(n_orders)


def _unit_rows(
    rows: np.ndarray, cols: np.ndarray, w: np.ndarray, shape: tuple[int, int]
) -> sp.csr_matrix:
    """The sparse matrix of the weights with every row scaled to unit length (a row of zeros,
    e.g. of items every customer bought, stays zero)."""
    norm = np.sqrt(np.bincount(rows, weights=w * w, minlength=shape[0]))
    norm[norm == 0] = 1.0
    return sp.csr_matrix((w / norm[rows], (rows, cols)), shape=shape)


def item_vectors(purchases: Purchases, max_customers: int = MAX_FIT_CUSTOMERS) -> pd.DataFrame:
    """Per item (index: the item id categories): :data:`VECTOR_COLUMNS` (zeros for an item
    without buyers); an empty frame when the shop has too few items with buyers."""
    p = purchases
    cust, item, tf = _pairs(p)
    empty = pd.DataFrame(columns=VECTOR_COLUMNS, dtype=np.float64, index=p.items[:0])
    buyers = np.bincount(item, minlength=p.n_items).astype(np.float64)
    used_items = np.flatnonzero(buyers > 0)
    if len(used_items) < EMBED_K + 2:
        return empty
    present = np.flatnonzero(np.bincount(cust, minlength=p.n_customers) > 0)
    idf = np.log((1.0 + len(present)) / (1.0 + buyers))
    fit_customers = present
    if len(present) > max_customers:  # the customers with the smallest hash of their id
        ids = np.asarray(p.customers[present], dtype=object).astype(str).astype(object)
        h = np.asarray(pd.util.hash_array(ids), dtype=np.uint64)
        fit_customers = present[np.sort(np.lexsort((ids.astype(str), h))[:max_customers])]
    # a compact matrix of the fitting customers and the items with buyers (ids that only occur
    # on or after as_of must not change the fit, not even its random start)
    row_of = np.full(p.n_customers, -1, dtype=np.int64)
    row_of[fit_customers] = np.arange(len(fit_customers))
    col_of = np.full(p.n_items, -1, dtype=np.int64)
    col_of[used_items] = np.arange(len(used_items))
    keep = row_of[cust] >= 0
    m = _unit_rows(
        row_of[cust[keep]],
        col_of[item[keep]],
        tf[keep] * idf[item[keep]],
        (len(fit_customers), len(used_items)),
    )
    if min(m.shape) <= EMBED_K:
        return empty
    v0 = np.random.default_rng(0).uniform(-1.0, 1.0, size=min(m.shape))
    _, s, vt = svds(m, k=EMBED_K, v0=v0, solver="arpack")
    vt = vt[np.argsort(-s, kind="stable")]
    signs = np.where(vt[np.arange(EMBED_K), np.argmax(np.abs(vt), axis=1)] > 0, 1.0, -1.0)
    vt *= signs[:, None]
    out = np.zeros((p.n_items, len(VECTOR_COLUMNS)))
    out[:, 0] = idf
    out[used_items, 1:] = vt.T
    return pd.DataFrame(out, index=p.items, columns=VECTOR_COLUMNS)


def embedding_features(purchases: Purchases, vectors: pd.DataFrame | None = None) -> pd.DataFrame:
    """:data:`EMBED_COLUMNS` of every customer with a purchase (index: customer id).

    ``vectors``: the :func:`item_vectors` of all customers when ``purchases`` holds only some
    of them; by default those of ``purchases``.
    """
    p = purchases
    vectors = item_vectors(p) if vectors is None else vectors
    cust, item, tf = _pairs(p)
    n = p.n_customers
    present = np.bincount(cust, minlength=n) > 0
    index = pd.Index(p.customers, name=CUSTOMER_ID)
    if vectors.empty:
        values = np.full((n, EMBED_K), np.nan)
    else:
        v = vectors.reindex(p.items, fill_value=0.0).to_numpy(np.float64)
        m = _unit_rows(cust, item, tf * v[item, 0], (n, p.n_items))
        values = np.asarray(m @ v[:, 1:])
    frame = pd.DataFrame(values, index=index, columns=EMBED_COLUMNS)
    return frame.loc[present]
