"""The recommender's components at a cutoff: history statistics, ALS, item-kNN, basket-kNN and
item-item similarity of the item names (:func:`name_neighbours`).

:func:`build_state` fits them all on an encoded shop's purchases before a cutoff and returns the
:class:`~shopml.artifacts.recommender.RecommenderArtifact` that ranks with them (the final state
at ``as_of`` and every validation snapshot are built by it, so they cannot disagree).
"""

from __future__ import annotations

import re
import warnings
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from implicit.als import AlternatingLeastSquares
from implicit.nearest_neighbours import CosineRecommender, bm25_weight
from implicit.utils import ParameterWarning
from threadpoolctl import threadpool_limits

from shopml.artifacts.recommender import DEFAULT_PARAMS, RecommenderArtifact
from training.encoded_shop import US_PER_DAY, Shop, epoch_us


def build_state(
    shop: Shop,
    cutoff: pd.Timestamp,
    *,
    factors: int = 64,
    regularization: float = 0.05,
    iterations: int = 15,
    bm25_k1: float = 100.0,
    bm25_b: float = 0.8,
    knn_k: int = 100,
    random_state: int = 0,
    num_threads: int = 1,
    params: dict[str, Any] | None = None,
    user_mask: np.ndarray | None = None,
    als_cg: bool = True,
    als_fits: int = 1,
    names: tuple[np.ndarray, np.ndarray] | None = None,
) -> RecommenderArtifact:
    """Fit every component on the shop's purchases before ``cutoff`` (all of its items), of
    every user or of the user codes where ``user_mask`` is True. ``names``: the items'
    :func:`name_neighbours` when already computed (they do not depend on the cutoff)."""
    sel = shop.window(None, cutoff)
    if user_mask is not None:
        sel &= user_mask[shop.user]
    n_items = len(shop.item_ids)
    users, u = np.unique(shop.user[sel], return_inverse=True)
    n_users = len(users)
    i, o = shop.item[sel], shop.order[sel]
    age = (epoch_us(cutoff) - shop.time[sel]) / US_PER_DAY
    # per (user, item): orders, days since last / first order, orders in the last 30 / 90 days
    key = u.astype(np.int64) * n_items + i
    order = np.lexsort((age, key))
    key, age_s = key[order], age[order]
    start = np.flatnonzero(np.r_[True, key[1:] != key[:-1]]) if len(key) else np.zeros(0, int)
    end = np.r_[start[1:], len(key)].astype(np.int64)
    su, si = key[start] // n_items, key[start] % n_items
    n_arr = (end - start).astype(np.float32)
    last, first = age_s[start], age_s[end - 1]
    n30 = np.add.reduceat((age_s < 30).astype(np.float32), start) if len(start) else n_arr
    n90 = np.add.reduceat((age_s < 90).astype(np.float32), start) if len(start) else n_arr
    decay = np.add.reduceat(np.exp(-age_s / 30.0), start) if len(start) else n_arr
    item_age = np.zeros(n_items)
    np.maximum.at(item_age, i, age)
    indptr = np.r_[0, np.cumsum(np.bincount(su, minlength=n_users))].astype(np.int64)
    _, first_line = np.unique(o, return_index=True)
    orders_u = np.bincount(u[first_line], minlength=n_users).astype(np.float32)
    u_last = np.full(n_users, np.inf)
    np.minimum.at(u_last, u, age)
    u_first = np.zeros(n_users)
    np.maximum.at(u_first, u, age)
    buyers = np.bincount(si, minlength=n_items).astype(np.float32)
    rep = n_arr >= 2
    repeaters = np.bincount(si[rep], minlength=n_items).astype(np.float32)
    gaps = (first - last)[rep] / (n_arr[rep] - 1)
    interval = np.full(n_items, float(np.median(gaps)) if len(gaps) else 60.0, dtype=np.float32)
    if len(gaps):
        med = pd.Series(gaps).groupby(si[rep]).median()
        interval[med.index.to_numpy()] = med.to_numpy()
    user_country = shop.user_country[users]
    country_pop = np.zeros((len(shop.countries), n_items), dtype=np.float32)
    uc = user_country[su]
    np.add.at(country_pop, (uc[uc >= 0], si[uc >= 0]), 1.0)
    # per-line temporaries are freed before the (memory-hungry) neighbour and ALS fits
    del sel, u, su, uc, age, key, order, age_s, start, end, first_line
    bnn_idx, bnn_sim = basket_neighbours(o, i, n_items, knn_k, num_threads)
    del o, i
    X = sp.csr_matrix((n_arr, si, indptr), shape=(n_users, n_items))
    uf, itf = fit_als(
        X,
        factors=factors,
        regularization=regularization,
        iterations=iterations,
        bm25_k1=bm25_k1,
        bm25_b=bm25_b,
        random_state=random_state,
        num_threads=num_threads,
        use_cg=als_cg,
        fits=als_fits,
    )
    nn_idx, nn_sim = cosine_neighbours(X, knn_k, num_threads)
    txt_idx, txt_sim = names or name_neighbours(shop.item_names, NAME_NEIGHBOURS)
    return RecommenderArtifact(
        as_of=str(cutoff),
        user_ids=shop.user_ids[users],
        item_ids=shop.item_ids,
        item_names=shop.item_names,
        item_categories=shop.item_categories,
        countries=shop.countries,
        user_country=user_country,
        hist_indptr=indptr,
        hist_indices=si.astype(np.int64),
        hist_n=n_arr,
        hist_last=last.astype(np.float32),
        hist_first=first.astype(np.float32),
        hist_n30=n30.astype(np.float32),
        hist_n90=n90.astype(np.float32),
        u_orders=orders_u,
        u_days_last=u_last.astype(np.float32),
        u_tenure=u_first.astype(np.float32),
        item_buyers=buyers,
        item_repeaters=repeaters,
        item_interval=interval,
        pop30=np.bincount(si, weights=last < 30, minlength=n_items).astype(np.float32),
        pop90=np.bincount(si, weights=last < 90, minlength=n_items).astype(np.float32),
        pop14=np.bincount(si, weights=last < 14, minlength=n_items).astype(np.float32),
        bnn_idx=bnn_idx,
        bnn_sim=bnn_sim,
        popall=buyers.copy(),
        country_pop=country_pop,
        user_factors=uf,
        item_factors=itf,
        nn_idx=nn_idx,
        nn_sim=nn_sim,
        hist_decay=decay.astype(np.float32),
        item_age=item_age.astype(np.float32),
        txt_idx=txt_idx,
        txt_sim=txt_sim,
        params=dict(params or DEFAULT_PARAMS),
    )


def fit_als(
    X: sp.csr_matrix,
    *,
    factors: int,
    regularization: float,
    iterations: int,
    bm25_k1: float,
    bm25_b: float,
    random_state: int,
    num_threads: int,
    use_cg: bool = True,
    fits: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """User and item factors of implicit ALS on the bm25-weighted user x item matrix
    (``use_cg``: implicit's conjugate-gradient solver, else the exact Cholesky solve).

    With ``fits`` > 1, ALS is fitted with seeds ``random_state + 7919 * f`` and the factors
    are concatenated, each scaled by ``1 / sqrt(fits)``: user . item is then the mean of the
    fits' scores (an averaged ALS, less dependent on one fit's floating-point path)."""
    if not X.nnz:
        width = factors * max(fits, 1)
        return (
            np.zeros((X.shape[0], width), dtype=np.float32),
            np.zeros((X.shape[1], width), dtype=np.float32),
        )
    users, items = [], []
    with threadpool_limits(1, "blas"):
        weighted = bm25_weight(X, K1=bm25_k1, B=bm25_b).tocsr().astype(np.float32)
        for f in range(max(fits, 1)):
            als = AlternatingLeastSquares(
                factors=factors,
                regularization=regularization,
                iterations=iterations,
                random_state=random_state + 7919 * f,
                num_threads=num_threads,
                use_cg=use_cg,
            )
            als.fit(weighted, show_progress=False)
            users.append(np.asarray(als.user_factors, dtype=np.float32))
            items.append(np.asarray(als.item_factors, dtype=np.float32))
    if len(users) == 1:
        return users[0], items[0]
    scale = np.float32(1.0 / np.sqrt(len(users)))
    return np.hstack(users) * scale, np.hstack(items) * scale


def cosine_neighbours(
    X: sp.csr_matrix, k: int, num_threads: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` cosine neighbours of every item (binary user x item), self excluded.

    Ties are broken by the lower item column; missing neighbours are -1 with similarity 0.
    """
    n = X.shape[1]
    B = X.astype(np.float32, copy=True).tocsr()
    B.data[:] = 1.0
    knn = CosineRecommender(K=k + 1, num_threads=num_threads)
    with warnings.catch_warnings():  # implicit converts its own normalised copy to CSR
        warnings.simplefilter("ignore", ParameterWarning)
        knn.fit(B, show_progress=False)
    S = knn.similarity.tocsr()
    S.setdiag(0.0)
    S.eliminate_zeros()
    k = max(min(k, n - 1), 1)
    rows = np.repeat(np.arange(n), np.diff(S.indptr))
    order = np.lexsort((S.indices, -S.data, rows))
    rows, cols, vals = rows[order], S.indices[order], S.data[order]
    rank = np.arange(len(rows)) - S.indptr[rows]
    ok = rank < k
    idx = np.full((n, k), -1, dtype=np.int64)
    sim = np.zeros((n, k), dtype=np.float32)
    idx[rows[ok], rank[ok]] = cols[ok]
    sim[rows[ok], rank[ok]] = vals[ok]
    return idx, sim


#: neighbours kept per item by :func:`name_neighbours`
NAME_NEIGHBOURS = 50
#: items whose name similarities :func:`name_neighbours` holds at once (bounds its memory)
NAME_CHUNK_ROWS = 1024
#: words in more item names than this are ignored by :func:`name_neighbours` (the catalogue's
#: stop words: they say little about an item, and each costs the square of its count in item
#: pairs). On Online Retail the most common word, SET, is in 378 of 3,958 names: the cap does
#: not bind there; a synthetic shop's 8 adjectives in 48,000 names would cost 290M pairs.
NAME_MAX_ITEMS = 500


def name_words(name: str) -> set[str]:
    """The words of an item name that :func:`name_neighbours` compares: upper-cased runs of
    letters and digits, at least 2 characters, not all digits."""
    return {
        w for w in re.split(r"[^A-Z0-9]+", str(name).upper()) if len(w) >= 2 and not w.isdigit()
    }


def name_neighbours(
    names: np.ndarray, k: int, max_items: int = NAME_MAX_ITEMS
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` neighbours of every item by the cosine of the tf-idf vectors of their names'
    words (:func:`name_words`; idf = ``log((n + 1) / (df + 1)) + 1`` over the catalogue), self
    excluded; as :func:`cosine_neighbours`. Items of one product line or design ("LUNCH BAG RED
    RETROSPOT" and "JUMBO BAG RED RETROSPOT", the same product under two codes) are neighbours
    whether or not anybody has bought both yet. Words in more than ``max_items`` names are
    ignored (idf is computed before)."""
    n = len(names)
    vocab: dict[str, int] = {}
    item_of: list[int] = []
    word_of: list[int] = []
    for j, name in enumerate(names.tolist()):
        for w in sorted(name_words(name)):
            item_of.append(j)
            word_of.append(vocab.setdefault(w, len(vocab)))
    T = sp.csr_matrix(
        (np.ones(len(item_of)), (np.asarray(item_of, np.int64), np.asarray(word_of, np.int64))),
        shape=(n, max(len(vocab), 1)),
    )
    df = np.asarray(T.sum(axis=0)).ravel()
    T = T.multiply(np.log((n + 1) / (df + 1)) + 1).tocsr()
    T = (T @ sp.diags((df <= max_items).astype(np.float64))).tocsr()
    T.eliminate_zeros()
    norm = np.sqrt(np.asarray(T.multiply(T).sum(axis=1)).ravel())
    T = (sp.diags(1 / np.maximum(norm, 1e-12)) @ T).tocsr()
    k = max(min(k, n - 1), 1)
    idx = np.full((n, k), -1, dtype=np.int64)
    sim = np.zeros((n, k), dtype=np.float32)
    TT = T.T.tocsr()
    for start in range(0, n, NAME_CHUNK_ROWS):
        # items in chunks: memory stays bounded on large catalogues with common name words
        S = (T[start : start + NAME_CHUNK_ROWS] @ TT).tocsr()
        S.sort_indices()
        rows = np.repeat(np.arange(S.shape[0]), np.diff(S.indptr))
        cols, vals = S.indices, S.data
        other = (cols != start + rows) & (vals > 0)  # self excluded
        rows, cols, vals = rows[other], cols[other], vals[other]
        # by row, then similarity (<= 1) descending, ties by the lower column (stable on sorted
        # indices): one float key, as lexsort on (column, -similarity, row) but faster
        order = np.argsort(4.0 * rows - vals, kind="stable")
        rows, cols, vals = rows[order], cols[order], vals[order]
        first = np.searchsorted(rows, np.arange(S.shape[0]))
        rank = np.arange(len(rows)) - first[rows]
        ok = rank < k
        idx[start + rows[ok], rank[ok]] = cols[ok]
        sim[start + rows[ok], rank[ok]] = vals[ok]
    return idx, sim


def basket_neighbours(
    order: np.ndarray, item: np.ndarray, n_items: int, k: int, num_threads: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` cosine neighbours of every item over orders (items bought in the same order);
    ``order``/``item`` are the codes of one line per (order, item)."""
    _, rows = np.unique(order, return_inverse=True)
    B = sp.csr_matrix(
        (np.ones(len(rows), dtype=np.float32), (rows, item)),
        shape=(int(rows.max(initial=-1)) + 1, n_items),
    )
    return cosine_neighbours(B, k, num_threads)
