"""The recommender estimator: fits ALS, item-kNN, buy-again, popularity and a re-ranker.

``RecommenderModel.fit(orders, as_of)`` builds a :class:`RecommenderArtifact` (the runtime that
serving loads). Everything it learns comes from purchases strictly before ``as_of``:

1. Snapshots of the shop at cutoffs ``as_of - d`` for each ``(d, w)`` in ``ranker_cutoffs``
   (default 90 and 45 days back), each labelled by the items bought in ``[cutoff, cutoff + w)``
   (so every label lies before ``as_of``). Candidates (history + ALS + item-kNN + popular) and
   their features come from the artifact's own code, so training and serving cannot disagree.
   Purchases are encoded once as integer codes (:func:`encode_shop`); the snapshots, including
   the final one at ``as_of``, are independent and run on ``num_threads`` threads.
2. A random ``holdout`` share of users is kept out of the re-ranker's training; on them, at the
   first cutoff (validation window ``[as_of - 90 d, as_of)``), every strategy is scored by
   NDCG@10: popularity, buy-again (popularity weight chosen there), ALS, item-kNN, re-ranker.
   The best strategy is used for "all items" and for "new items only"; a strategy that does not
   beat popularity is never chosen. Cold-user popularity (window, country weight) is chosen on
   the users who first bought in the validation window.
3. The components are refitted on everything before ``as_of``; the validated re-ranker (trained
   without the held-out users, so what was validated is what ships) is attached to the artifact,
   and the ranked lists of the most recently active users are precomputed for serving (the
   others are ranked live on request).
4. Gift-season prior (``season_prior``, default on): each item's expected log ratio of its
   demand over the next 90 days (the validation window's length) to its recent level, from
   the demand model's ramp (:mod:`training.seasonality`: the remaining December log ratio,
   pooled over name words and category, times the calendar ramp 1 October -> 15 December or
   the season's measured pace; strength 1, no constant tuned), is added to the re-ranker's
   log-odds before ranking (``RecommenderArtifact.item_season``; the validation state gets the
   prior of its own cutoff). Why on by default, from first principles: the re-ranker learns
   P(buy) from label windows before ``as_of``, and its features (popularity over 14-90 days,
   user-item recency) describe the recent level only; every window it learns from is
   off-season (the Mar-Aug label windows of an autumn fit contain no gift season, and the
   oldest history is last Christmas, learned as "old = not re-bought"). When an item's demand
   is expected to change by a factor ``m`` and P(buy) is small, its odds change by about ``m``,
   so ``log m`` is the offset on the log-odds scale. The prior is 0 wherever the ramp has not
   started (an ``as_of`` before the autumn whose season index does not yet rise: the lists
   are then identical to ``season_prior=False``) and without a December in the history.
   Checked where it can fail, on one-year synthetic shops with a gift season (``shopml
   demo-data --customers 20000 --items 400 --start 2010-12-01 --end 2011-12-10``, seeds 1 and
   2) fitted at 2011-09-01 (``python -m training.benchmarks.recommend --season-check DIR ...``,
   3 random states): R-all NDCG@10 0.5970 -> 0.5986 and 0.6044 -> 0.6061 (paired +0.0016 /
   +0.0017, SE 0.0003 each; every seed improves), R-new 0.3358 -> 0.3398 and 0.3536 -> 0.3587.

At scale (caps that never bind on Online Retail): the ranker snapshots are built on a fixed
random sample of ``max_snapshot_users`` users; the re-ranker learns from at most
``max_ranker_users`` labelled users per cutoff, validation scores at most
``max_validation_users``, and at most ``max_precompute_users`` lists are precomputed; the last
three shrink further on big catalogues (:func:`cell_cap`), since ranking is dense over items.
``max_users`` (default None) fits the whole model on a fixed random sample of users (the
training job's backtest uses it on very big shops; the served model always has every user).
"""

from __future__ import annotations

import logging
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Self

import lightgbm as lgb
import numpy as np
import pandas as pd
import scipy.sparse as sp
from implicit.als import AlternatingLeastSquares
from implicit.nearest_neighbours import CosineRecommender, bm25_weight
from implicit.utils import ParameterWarning
from threadpoolctl import threadpool_limits

from features.arrays import id_codes
from features.demand import WeeklyDemand
from features.schema import (
    CATEGORY,
    COUNTRY,
    CUSTOMER_ID,
    IS_RETURN,
    ITEM_ID,
    ITEM_NAME,
    ORDER_ID,
    ORDERED_AT,
)
from shopml.artifacts.recommender import (
    DEFAULT_PARAMS,
    FEATURES,
    PRECOMPUTE_WIDTH,
    RecommenderArtifact,
    row_chunk,
)
from training.base import check_fitted
from training.seasonality import season_log_ratio, weekly_units

log = logging.getLogger(__name__)

Rows = tuple[np.ndarray, np.ndarray, np.ndarray]  # re-ranker features, labels, user positions

#: chosen on validation for fit time (<= 10 s on Online Retail): 60 trees x 15 leaves, 63 bins
#: scored NDCG@10 0.433 (all) / 0.164 (new) there, against 0.437 / 0.163 for 300 x 31 x 255.
#: Learning rate 0.08 (was 0.15) and 30 % negatives (was 15 %) with the category, basket-kNN,
#: recency-weighted kNN and 14-day popularity features: protocol R replayed at 2011-06-03
#: (``python -m training.benchmarks.recommend --validation``, 3 seeds) R-all 0.4227 -> 0.4353,
#: R-new 0.1600 -> 0.1608 (lambdarank 0.419, 120 trees 0.413, 3-5 cutoffs within +-0.003).
#: Within +-0.003 of R-all 0.4353 / 0.3999 on the 2011-06-03 / 2011-04-18 replays (3 seeds
#: each): 7 or 31 leaves, 100-120 trees, rank_xendcg, reg_lambda 5, 255 bins, 50 % negatives,
#: 3 bagged rankers, 1/sqrt(rows) user weights, re-buy-interval / quantity / price features,
#: popularity scaled by users, more candidates, ALS 128 factors. Worse: 1/positives user
#: weights 0.428 / 0.393, 90-day labels alone (no 45-day cutoff) 0.421 / 0.384.
#: Also within noise on both replays (R-all / R-new, 3 seeds; prototypes, see
#: experiments/results/online-retail-R-diagnostics.md): user basket-breadth features
#: 0.4349 / 0.4000, user due-ness 0.4353 / 0.3983, label-horizon feature 0.4314 / 0.3992 (R-new
#: 0.151 at 06-03), December-2010 item share 0.4336 / 0.4011, positives of the 45-day cutoff
#: re-weighted to the 90-day odds 0.4369 / 0.4007 (R-new 0.155 at 06-03), newest cutoff x2
#: 0.4342 / 0.4010, re-ranker refitted on every user 0.4343 / 0.4027, user-item recency
#: features left out 0.4349 / 0.3988. Worse: item dynamics (7-day popularity, new and repeat
#: buyers) 0.4281 / 0.3995, item age/tenure left out 0.4284 / 0.4007, trend/14/30-day
#: popularity left out 0.4217 / 0.3956.
DEFAULT_RANKER_PARAMS: dict[str, Any] = {
    "objective": "binary",
    "n_estimators": 60,
    "learning_rate": 0.08,
    "num_leaves": 15,
    "max_bin": 63,
    "min_child_samples": 50,
    "subsample": 0.8,
    "subsample_freq": 1,
    "colsample_bytree": 0.8,
    "verbose": -1,
}
NEGATIVE_RATE = 0.3  # share of negative candidates kept to train the re-ranker
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


def ndcg_at_k(recs: list[list[Any]], truth: list[set[Any]], k: int = 10) -> float:
    """Mean NDCG@k with binary relevance (users with no recommendation score 0)."""
    if not truth:
        return 0.0
    disc = 1.0 / np.log2(np.arange(2, k + 2))
    total = 0.0
    for r, rel in zip(recs, truth, strict=True):
        if not rel:
            continue
        hits = np.array([x in rel for x in r[:k]], dtype=float)
        total += float((hits * disc[: len(hits)]).sum() / disc[: min(len(rel), k)].sum())
    return total / len(truth)


US_PER_DAY = 86_400_000_000


@dataclass(frozen=True)
class Shop:
    """Purchases before ``as_of`` as integer codes (one row per distinct order x item) + lookups.

    Encoded once per fit so that every snapshot, label window and validation set is cut from
    the same arrays without touching string columns again.
    """

    user: np.ndarray  # code into user_ids
    item: np.ndarray  # code into item_ids
    order: np.ndarray  # order code
    time: np.ndarray  # int64 microseconds since the epoch
    user_ids: np.ndarray  # sorted strings
    item_ids: np.ndarray  # sorted strings
    user_country: np.ndarray  # code into countries per user code, -1 unknown
    countries: np.ndarray
    item_names: np.ndarray
    item_categories: np.ndarray

    def window(self, start: pd.Timestamp | None, end: pd.Timestamp) -> np.ndarray:
        """Boolean mask of lines with ``start <= ordered_at < end``."""
        mask = self.time < _us(end)
        if start is not None:
            mask &= self.time >= _us(start)
        return mask

    def truth(self, start: pd.Timestamp, days: int, users: np.ndarray) -> sp.csr_matrix:
        """Binary ``len(users) x items``: what each user code bought in ``[start, start + days)``."""
        sel = self.window(start, start + pd.Timedelta(days=days))
        lookup = np.full(len(self.user_ids), -1, dtype=np.int64)
        lookup[users] = np.arange(len(users))
        r = lookup[self.user[sel]]
        ok = r >= 0
        m = sp.csr_matrix(
            (np.ones(int(ok.sum()), dtype=np.float32), (r[ok], self.item[sel][ok])),
            shape=(len(users), len(self.item_ids)),
        )
        m.sum_duplicates()
        m.data[:] = 1.0
        return m


def _us(when: pd.Timestamp) -> int:
    return int(pd.Timestamp(when).value // 1000)  # .value is in nanoseconds


def purchase_mask(orders: pd.DataFrame, as_of: pd.Timestamp | str | None = None) -> np.ndarray:
    """Boolean mask of purchase lines (not returns) before ``as_of`` (all when None)."""
    mask = np.ones(len(orders), dtype=bool)
    if IS_RETURN in orders.columns:
        mask &= ~orders[IS_RETURN].to_numpy(dtype=bool)
    if as_of is not None:
        mask &= (orders[ORDERED_AT] < pd.Timestamp(as_of)).to_numpy()
    return mask


def encode_shop(
    orders: pd.DataFrame,
    items: pd.DataFrame | None = None,
    customers: pd.DataFrame | None = None,
    as_of: pd.Timestamp | str | None = None,
) -> Shop:
    """Encode purchase lines before ``as_of`` (all when None; returns dropped) and the item /
    customer metadata. Reads the four columns it needs one at a time (no copy of the table)."""
    mask = purchase_mask(orders, as_of)
    u, user_ids = id_codes(orders[CUSTOMER_ID][mask], None)
    i, item_ids = id_codes(orders[ITEM_ID][mask], None)
    order_col = orders[ORDER_ID][mask]
    if isinstance(order_col.dtype, pd.CategoricalDtype):
        o = order_col.cat.codes.to_numpy().astype(np.int64)
    elif order_col.dtype == object:
        o = pd.factorize(order_col.astype(str).to_numpy())[0].astype(np.int64)
    else:
        o = pd.factorize(order_col)[0].astype(np.int64)
    del order_col
    t = orders[ORDERED_AT][mask].to_numpy().astype("datetime64[us]").astype(np.int64)
    ok = (u >= 0) & (i >= 0) & (o >= 0)
    u, i, o, t = u[ok], i[ok], o[ok], t[ok]
    # one line per (order, item), its earliest time
    key = o * max(len(item_ids), 1) + i
    first = np.lexsort((t, key))
    key = key[first]
    keep = first[np.r_[True, key[1:] != key[:-1]]] if len(key) else first
    keep.sort()
    countries = np.array([], dtype="<U1")
    user_country = np.full(len(user_ids), -1, dtype=np.int64)
    if customers is not None and COUNTRY in customers.columns and len(user_ids):
        c = customers.assign(_id=customers[CUSTOMER_ID].astype(str)).drop_duplicates("_id")
        per_user = c.set_index("_id")[COUNTRY].reindex(user_ids).fillna("").astype(str)
        per_user_arr = per_user.to_numpy().astype(str)
        countries = np.unique(per_user_arr[per_user_arr != ""])
        if len(countries):
            user_country = np.where(
                per_user_arr != "", np.searchsorted(countries, per_user_arr), -1
            ).astype(np.int64)
    names = np.full(len(item_ids), "", dtype=object)
    cats = np.full(len(item_ids), "", dtype=object)
    if items is not None and len(items):
        meta = items.assign(_id=items[ITEM_ID].astype(str)).drop_duplicates("_id").set_index("_id")
        if ITEM_NAME in meta.columns:
            names = meta[ITEM_NAME].reindex(item_ids).fillna("").astype(str).to_numpy()
        if CATEGORY in meta.columns:
            cats = meta[CATEGORY].reindex(item_ids).fillna("").astype(str).to_numpy()
    return Shop(
        user=u[keep],
        item=i[keep],
        order=o[keep],
        time=t[keep],
        user_ids=np.asarray(user_ids, dtype=str),
        item_ids=np.asarray(item_ids, dtype=str),
        user_country=user_country,
        countries=countries,
        item_names=_text(names),
        item_categories=_text(cats),
    )


def _text(values: np.ndarray) -> np.ndarray:
    arr = np.asarray(values, dtype=str)
    return arr if arr.size else np.array([], dtype="<U1")


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
) -> RecommenderArtifact:
    """Fit every component on the shop's purchases before ``cutoff`` (all of its items), of
    every user or of the user codes where ``user_mask`` is True."""
    sel = shop.window(None, cutoff)
    if user_mask is not None:
        sel &= user_mask[shop.user]
    n_items = len(shop.item_ids)
    users, u = np.unique(shop.user[sel], return_inverse=True)
    n_users = len(users)
    i, o = shop.item[sel], shop.order[sel]
    age = (_us(cutoff) - shop.time[sel]) / US_PER_DAY
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
    )
    nn_idx, nn_sim = cosine_neighbours(X, knn_k, num_threads)
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
) -> tuple[np.ndarray, np.ndarray]:
    """User and item factors of implicit ALS on the bm25-weighted user x item matrix."""
    if not X.nnz:
        return (
            np.zeros((X.shape[0], factors), dtype=np.float32),
            np.zeros((X.shape[1], factors), dtype=np.float32),
        )
    with threadpool_limits(1, "blas"):
        als = AlternatingLeastSquares(
            factors=factors,
            regularization=regularization,
            iterations=iterations,
            random_state=random_state,
            num_threads=num_threads,
        )
        weighted = bm25_weight(X, K1=bm25_k1, B=bm25_b).tocsr().astype(np.float32)
        als.fit(weighted, show_progress=False)
    return (
        np.asarray(als.user_factors, dtype=np.float32),
        np.asarray(als.item_factors, dtype=np.float32),
    )


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


def training_rows(
    state: RecommenderArtifact,
    users: np.ndarray,
    truth: sp.csr_matrix,
    rng: np.random.Generator,
    negative_rate: float,
    chunk: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Re-ranker rows for ``users`` of ``state``: features, labels, position in ``users``.

    Every positive candidate is kept, negatives with probability ``negative_rate``.
    """
    chunk = chunk or row_chunk(state.n_items)
    Fs, ys, rs = [], [], []
    for start in range(0, len(users), chunk):
        rows = users[start : start + chunk]
        parts = state._parts(rows)
        r, c = np.nonzero(state.candidates(rows, parts))
        y = np.asarray(truth[rows[r], c]).ravel() > 0
        keep = y | (rng.random(len(y)) < negative_rate)
        r, c, y = r[keep], c[keep], y[keep]
        Fs.append(state.features(rows, r, c, parts))
        ys.append(y)
        rs.append(r + start)
    if not Fs:
        return np.zeros((0, len(FEATURES))), np.zeros(0, dtype=bool), np.zeros(0, dtype=np.int64)
    return np.vstack(Fs), np.concatenate(ys), np.concatenate(rs)


def capped_sample(n: int, cap: int | None, seed: int | list[int]) -> np.ndarray:
    """Sorted positions ``0..n-1``: all of them, or ``cap`` drawn without replacement."""
    if cap is None or n <= cap:
        return np.arange(n, dtype=np.int64)
    return np.sort(np.random.default_rng(seed).choice(n, size=cap, replace=False)).astype(np.int64)


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


def season_by_item(shop: Shop, wd: WeeklyDemand, start: pd.Timestamp, days: int) -> np.ndarray:
    """Per item of ``shop`` (float32): the demand model's gift-season log ratio of its demand
    over ``[start, start + days)`` to its recent level (:func:`training.seasonality.
    season_log_ratio`, from weekly units before ``start``); 0 for items without weekly sales."""
    out = np.zeros(len(shop.item_ids), dtype=np.float32)
    col = pd.Index(shop.item_ids).get_indexer(pd.Index(wd.items.astype(str)))
    ok = col >= 0
    if not ok.any():
        return out
    names = np.full(len(wd.items), "", dtype=object)
    cats = np.full(len(wd.items), "", dtype=object)
    names[ok], cats[ok] = shop.item_names[col[ok]], shop.item_categories[col[ok]]
    ratio = season_log_ratio(wd, start, days, names, cats)
    out[col[ok]] = ratio[ok]
    return out


def _ago(when: pd.Timestamp, days: int) -> pd.Timestamp:
    return when - pd.Timedelta(days=days)


def fit_ranker(F: np.ndarray, y: np.ndarray, groups: np.ndarray, params: dict[str, Any]) -> Any:
    """LightGBM re-ranker: a binary classifier, or a ranker over ``groups`` (contiguous ids)
    when ``params["objective"]`` is a ranking objective. Returns the booster."""
    if params.get("objective") in ("lambdarank", "rank_xendcg"):
        starts = np.flatnonzero(np.r_[True, groups[1:] != groups[:-1]])
        sizes = np.diff(np.r_[starts, len(groups)])
        return lgb.LGBMRanker(**params).fit(F, y.astype(np.int32), group=sizes).booster_
    return lgb.LGBMClassifier(**params).fit(F, y).booster_


def _evaluate(
    state: RecommenderArtifact,
    rows: np.ndarray,
    truth: list[set[int]],
    exclude: str,
    options: list[tuple[str, dict[str, Any]]],
    chunk: int | None = None,
) -> list[float]:
    """NDCG@10 of each (strategy, params) option on ``rows`` (parts computed once per chunk)."""
    chunk = chunk or row_chunk(state.n_items)
    saved = dict(state.params)
    recs: list[list[list[int]]] = [[] for _ in options]
    try:
        for start in range(0, len(rows), chunk):
            sub = rows[start : start + chunk]
            parts = state._parts(sub)
            allowed = state._allowed(sub, exclude, None, ())
            for o, (name, extra) in enumerate(options):
                state.params = {**saved, **extra}
                top, _, _ = state._rank(sub, 10, exclude, allowed, strategy=name, parts=parts)
                recs[o] += [t[t >= 0].tolist() for t in top]
    finally:
        state.params = saved
    return [ndcg_at_k(r, truth) for r in recs]


class RecommenderModel:
    """ALS + item-kNN + buy-again + popularity, blended by a re-ranker chosen on validation."""

    kind: ClassVar[str] = "recommender"

    def __init__(
        self,
        factors: int = 64,
        regularization: float = 0.05,
        iterations: int = 8,
        bm25_k1: float = 100.0,
        bm25_b: float = 0.8,
        knn_k: int = 100,
        n_als: int = 50,
        n_knn: int = 50,
        n_pop: int = 30,
        ranker_cutoffs: tuple[tuple[int, int], ...] = ((90, 90), (45, 45)),
        ranker_params: dict[str, Any] | None = None,
        use_ranker: bool = True,
        holdout: float = 0.2,
        negative_rate: float = NEGATIVE_RATE,
        ba_pop_weights: tuple[float, ...] = (0.0, 0.1, 0.3, 1.0),
        cold_country_weights: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0),
        random_state: int = 0,
        num_threads: int = 1,
        precompute_width: int = PRECOMPUTE_WIDTH,
        max_precompute_users: int | None = 100_000,
        max_snapshot_users: int | None = 200_000,
        max_ranker_users: int | None = 20_000,
        max_validation_users: int | None = 5_000,
        max_users: int | None = None,
        season_prior: bool = True,
    ) -> None:
        self.factors = factors
        self.regularization = regularization
        self.iterations = iterations
        self.bm25_k1 = bm25_k1
        self.bm25_b = bm25_b
        self.knn_k = knn_k
        self.n_als = n_als
        self.n_knn = n_knn
        self.n_pop = n_pop
        self.ranker_cutoffs = ranker_cutoffs
        self.ranker_params = ranker_params
        self.use_ranker = use_ranker
        self.holdout = holdout
        self.negative_rate = negative_rate
        self.ba_pop_weights = ba_pop_weights
        self.cold_country_weights = cold_country_weights
        self.random_state = random_state
        self.num_threads = num_threads
        self.precompute_width = precompute_width
        self.max_precompute_users = max_precompute_users
        self.max_snapshot_users = max_snapshot_users
        self.max_ranker_users = max_ranker_users
        self.max_validation_users = max_validation_users
        self.max_users = max_users
        self.season_prior = season_prior
        for name in (
            "max_precompute_users",
            "max_snapshot_users",
            "max_ranker_users",
            "max_validation_users",
            "max_users",
        ):
            cap = getattr(self, name)
            if cap is not None and (isinstance(cap, bool) or int(cap) < 1):
                raise ValueError(f"{name} must be a positive integer or None, got {cap!r}")

    # ------------------------------------------------------------------ fit
    def _state(
        self,
        shop: Shop,
        cutoff: pd.Timestamp,
        params: dict[str, Any],
        threads: int | None = None,
        user_mask: np.ndarray | None = None,
    ) -> RecommenderArtifact:
        return build_state(
            shop,
            cutoff,
            factors=self.factors,
            regularization=self.regularization,
            iterations=self.iterations,
            bm25_k1=self.bm25_k1,
            bm25_b=self.bm25_b,
            knn_k=self.knn_k,
            random_state=self.random_state,
            num_threads=self.num_threads if threads is None else threads,
            params=params,
            user_mask=user_mask,
        )

    def fit(
        self,
        orders: pd.DataFrame,
        as_of: pd.Timestamp | str,
        items: pd.DataFrame | None = None,
        customers: pd.DataFrame | None = None,
    ) -> Self:
        """Fit on purchases strictly before ``as_of``; choose strategies on validation."""
        t0 = time.perf_counter()
        as_of = pd.Timestamp(as_of)
        # nothing on/after as_of is ever seen
        shop = encode_shop(orders, items, customers, as_of)
        if len(shop.item_ids) == 0:
            raise ValueError(f"no purchases before {as_of}: nothing to fit")
        params: dict[str, Any] = {
            **DEFAULT_PARAMS,
            "n_als": self.n_als,
            "n_knn": self.n_knn,
            "n_pop": self.n_pop,
        }
        # snapshots (the final one and those of the ranker's cutoffs) are independent: they
        # run on num_threads threads, one OpenMP thread each; results do not depend on it
        wd = weekly_units(orders, as_of) if self.season_prior else None
        with ThreadPoolExecutor(max_workers=max(self.num_threads, 1)) as pool:
            sample = self._user_sample(len(shop.user_ids), self.max_users)
            final = pool.submit(self._state, shop, as_of, dict(params), 1, sample)
            ranker, validation, chosen = self._learn(shop, as_of, pool, wd)
            params.update(chosen)
            t_learn = time.perf_counter() - t0
            self.state_ = final.result()
        t_final = time.perf_counter() - t0
        self.state_.params = {**self.state_.params, **params}
        self.state_.ranker = ranker
        if wd is not None:
            # over the window the strategies are chosen for (the validation window's length)
            days = self.ranker_cutoffs[0][0] if self.ranker_cutoffs else 90
            self.state_.item_season = season_by_item(shop, wd, as_of, days)
            self.state_.params["season"] = {
                **validation.pop("season", {}),
                "days": days,
                "items": int((self.state_.item_season > 0).sum()),
                "max": round(float(self.state_.item_season.max(initial=0)), 4),
            }
        self.state_.params["season_prior"] = bool(self.season_prior)
        self.state_.params["validation"] = validation
        if self.precompute_width > 0:
            self.state_.precompute(
                self.precompute_width,
                threads=self.num_threads,
                max_users=cell_cap(
                    self.max_precompute_users, PRECOMPUTE_CELLS, self.state_.n_items
                ),
            )
        self.fit_seconds_ = time.perf_counter() - t0
        self.state_.params["fit_seconds"] = round(self.fit_seconds_, 2)
        log.info(
            "recommender fitted in %.1f s (validation done at %.1f s, final state at %.1f s, "
            "lists of %d users precomputed): all=%s new=%s",
            self.fit_seconds_,
            t_learn,
            t_final,
            len(self.state_.pre_users) if self.state_.has_precomputed else 0,
            params["strategy_all"],
            params["strategy_new"],
        )
        return self

    def _learn(
        self,
        shop: Shop,
        as_of: pd.Timestamp,
        pool: ThreadPoolExecutor,
        wd: WeeklyDemand | None = None,
    ) -> tuple[Any, dict[str, Any], dict[str, Any]]:
        """Snapshots at the ranker's cutoffs (on ``pool``) and their re-ranker rows, then
        :meth:`_validate` (ranker, scores, chosen parameters). With weekly units ``wd``, the
        validation state gets the gift-season prior of its own cutoff and window."""
        rng = np.random.default_rng(self.random_state)
        held = rng.random(len(shop.user_ids)) < self.holdout  # per user code
        cutoffs = [
            (d, w) for d, w in self.ranker_cutoffs if shop.window(None, _ago(as_of, d)).any()
        ]
        if not cutoffs:
            return None, {}, {}
        if not self.use_ranker:
            cutoffs = cutoffs[:1]
        mask = self._snapshot_users(len(shop.user_ids))
        jobs = [
            pool.submit(self._snapshot, shop, as_of, d, w, j, mask)
            for j, (d, w) in enumerate(cutoffs)
        ]
        done = [job.result() for job in jobs]
        val_state, val_days = done[0][0], cutoffs[0][0]
        if wd is not None:
            val_state.item_season = season_by_item(shop, wd, _ago(as_of, val_days), val_days)
        Xs, ys, hs, gs = [], [], [], []
        for j, (_, codes, users, (F, y, r)) in enumerate(done if self.use_ranker else []):
            Xs.append(F)
            ys.append(y)
            hs.append(held[codes[users]][r])
            gs.append(r + j * len(shop.user_ids))  # one group (user at a cutoff) per ranked list
        ranker, validation, chosen = self._validate(
            shop, as_of, val_state, val_days, held, Xs, ys, hs, gs
        )
        if wd is not None:
            validation["season"] = {
                "validation_items": int((val_state.item_season > 0).sum()),
                "validation_max": round(float(val_state.item_season.max(initial=0)), 4),
            }
        return ranker, validation, chosen

    def _user_sample(self, n_users: int, cap: int | None) -> np.ndarray | None:
        """Per user code: True for a fixed random sample of at most ``cap`` users (the same
        users for the same cap), or None for every user."""
        if cap is None or n_users <= cap:
            return None
        mask = np.zeros(n_users, dtype=bool)
        mask[capped_sample(n_users, cap, [self.random_state, 7])] = True
        return mask

    def _snapshot_users(self, n_users: int) -> np.ndarray | None:
        """The users the validation snapshots are built on: at most ``max_snapshot_users``
        (and ``max_users``), or None for every user."""
        caps = [c for c in (self.max_snapshot_users, self.max_users) if c is not None]
        return self._user_sample(n_users, min(caps) if caps else None)

    def _snapshot(
        self,
        shop: Shop,
        as_of: pd.Timestamp,
        days: int,
        window: int,
        seed: int,
        user_mask: np.ndarray | None = None,
    ) -> tuple[RecommenderArtifact, np.ndarray, np.ndarray, Rows]:
        """Components at ``as_of - days`` and re-ranker rows labelled by the next ``window``
        days (capped at ``as_of``): state, user codes, labelled users (state rows), rows.
        The re-ranker's rows come from at most ``max_ranker_users`` labelled users."""
        t0 = time.perf_counter()
        cutoff = _ago(as_of, days)
        params = {**DEFAULT_PARAMS, "n_als": self.n_als, "n_knn": self.n_knn, "n_pop": self.n_pop}
        state = self._state(shop, cutoff, params, 1, user_mask)
        t1 = time.perf_counter()
        codes = np.searchsorted(shop.user_ids, state.user_ids)
        truth = shop.truth(cutoff, min(window, days), codes)
        users = np.flatnonzero(truth.getnnz(axis=1) > 0)
        cap = cell_cap(self.max_ranker_users, RANKER_CELLS, state.n_items)
        users = users[capped_sample(len(users), cap, [self.random_state, 8])]
        if not self.use_ranker:
            users = users[:0]
        rng = np.random.default_rng([self.random_state, seed])
        rows = training_rows(state, users, truth, rng, self.negative_rate)
        log.info(
            "snapshot %s: %d users, state %.1f s; %d ranker rows of %d users %.1f s",
            cutoff.date(),
            state.n_users,
            t1 - t0,
            len(rows[1]),
            len(users),
            time.perf_counter() - t1,
        )
        return state, codes, users, rows

    def _validate(
        self,
        shop: Shop,
        as_of: pd.Timestamp,
        state: RecommenderArtifact,
        days: int,
        held: np.ndarray,
        Xs: list[np.ndarray],
        ys: list[np.ndarray],
        hs: list[np.ndarray],
        gs: list[np.ndarray],
    ) -> tuple[Any, dict[str, Any], dict[str, Any]]:
        """Score every strategy on held-out users of the validation window; refit the ranker."""
        cutoff = as_of - pd.Timedelta(days=days)
        item_ids = state.item_ids
        codes = np.searchsorted(shop.user_ids, state.user_ids)
        truth = shop.truth(cutoff, days, codes)
        rows = np.flatnonzero((truth.getnnz(axis=1) > 0) & held[codes])
        cap = cell_cap(self.max_validation_users, VALIDATION_CELLS, state.n_items)
        rows = rows[capped_sample(len(rows), cap, [self.random_state, 9])]
        validation: dict[str, Any] = {"window": [str(cutoff), str(as_of)], "users": len(rows)}
        chosen: dict[str, Any] = {}
        ranker = None
        rparams = {**DEFAULT_RANKER_PARAMS, **(self.ranker_params or {})}
        rparams.update(random_state=self.random_state, n_jobs=self.num_threads)
        if Xs and len(rows):
            # held-out users' rows (at every cutoff) stay out of this fit
            keep = ~np.concatenate(hs)
            F, y = np.vstack(Xs)[keep], np.concatenate(ys)[keep]
            if y.any() and not y.all():
                ranker = fit_ranker(F, y, np.concatenate(gs)[keep], rparams)
        truth_all = [
            set(truth.indices[truth.indptr[r] : truth.indptr[r + 1]].tolist()) for r in rows
        ]
        bought = [
            set(state.hist_indices[state.hist_indptr[r] : state.hist_indptr[r + 1]].tolist())
            for r in rows
        ]
        truth_new = [t - b for t, b in zip(truth_all, bought, strict=True)]
        scores: dict[str, dict[str, float]] = {"all": {}, "new": {}}
        saved = dict(state.params)
        options: list[tuple[str, dict[str, Any]]] = [("popular", {})]
        options += [("buy-again", {"ba_pop_weight": w}) for w in self.ba_pop_weights]
        options += [("als", {}), ("knn", {})]
        if ranker is not None:
            options.append(("ranker", {}))
        state.ranker = ranker
        for mode, exclude, truth_sets in (("all", "auto", truth_all), ("new", "always", truth_new)):
            keep = np.array([i for i, t in enumerate(truth_sets) if t], dtype=np.int64)
            opts = [o for o in options if not (mode == "new" and o[0] == "buy-again")]
            values = _evaluate(state, rows[keep], [truth_sets[i] for i in keep], exclude, opts)
            best: tuple[float, dict[str, Any]] | None = None
            for (name, extra), value in zip(opts, values, strict=True):
                label = name if not extra else f"{name} w={extra['ba_pop_weight']}"
                scores[mode][label] = round(value, 5)
                if best is None or value > best[0]:
                    best = (value, {f"strategy_{mode}": name, **extra})
            assert best is not None
            chosen.update(best[1])
            validation[f"ndcg@10_{mode}"] = round(best[0], 5)  # headline: the chosen strategy
        state.params = saved
        validation["ndcg@10"] = scores  # every candidate, labelled (not a headline metric)
        # cold users: first purchase inside the validation window
        recent = np.unique(shop.user[shop.window(cutoff, as_of)])
        # first order in the window (snapshots may hold a sample of users: not ``codes``)
        cold = np.setdiff1d(recent, shop.user[shop.window(None, cutoff)])
        cold = cold[capped_sample(len(cold), self.max_validation_users, [self.random_state, 10])]
        if len(cold):
            cold_truth = shop.truth(cutoff, days, cold)
            sets = [
                set(item_ids[cold_truth.indices[cold_truth.indptr[r] : cold_truth.indptr[r + 1]]])
                for r in range(len(cold))
            ]
            cc = shop.user_country[cold]
            countries = [str(shop.countries[c]) if c >= 0 else None for c in cc.tolist()]
            cold_ids = shop.user_ids[cold].tolist()
            best_c: tuple[float, dict[str, Any]] | None = None
            scores_c: dict[str, float] = {}
            for window in ("all", "90"):
                weights = self.cold_country_weights if len(state.countries) else (0.0,)
                for wc in weights:
                    state.params = {**saved, "cold_window": window, "cold_country_weight": wc}
                    recs = state.recommend_batch(cold_ids, 10, countries=countries)
                    value = ndcg_at_k(recs, sets)
                    scores_c[f"{window} country={wc}"] = round(value, 5)
                    if best_c is None or value > best_c[0]:
                        best_c = (value, {"cold_window": window, "cold_country_weight": wc})
            state.params = saved
            assert best_c is not None
            chosen.update(best_c[1])
            validation["ndcg@10_cold"] = round(best_c[0], 5)
            validation["cold_ndcg@10"] = scores_c
            validation["cold_users"] = len(cold)
        # the validated ranker (fitted without the held-out users) is the one shipped
        if "ranker" not in (chosen.get("strategy_all"), chosen.get("strategy_new")):
            ranker = None
        return ranker, validation, chosen

    # ------------------------------------------------------------------ use
    @property
    def artifact(self) -> RecommenderArtifact:
        """The fitted runtime (what serving loads)."""
        check_fitted(self, "state_")
        return self.state_

    def recommend(self, user_id: str, k: int = 10, **kwargs: Any) -> list[Any]:
        """See :meth:`RecommenderArtifact.recommend`."""
        return self.artifact.recommend(user_id, k, **kwargs)

    def recommend_batch(self, user_ids: list[str], k: int = 10, **kwargs: Any) -> list[list[str]]:
        """See :meth:`RecommenderArtifact.recommend_batch`."""
        return self.artifact.recommend_batch(user_ids, k, **kwargs)

    def similar_items(self, item_id: str, k: int = 10) -> list[tuple[str, float]]:
        """See :meth:`RecommenderArtifact.similar_items`."""
        return self.artifact.similar_items(item_id, k)

    def save(self, folder: Path) -> None:
        """Save the artifact (``arrays.npz``, ``meta.json``, ``ranker.txt``)."""
        self.artifact.save(folder)

    @classmethod
    def load(cls, folder: Path) -> Self:
        """Load a saved artifact into an (already fitted) estimator."""
        model = cls()
        model.state_ = RecommenderArtifact.load(folder)
        return model
