"""The recommender estimator: fits ALS, item-kNN, buy-again, popularity and a re-ranker.

``RecommenderModel.fit(orders, as_of)`` builds a :class:`RecommenderArtifact` (the runtime that
serving loads). Everything it learns comes from purchases strictly before ``as_of``:

1. Snapshots of the shop at cutoffs ``as_of - d`` for each ``(d, w)`` in ``ranker_cutoffs``
   (default 90/60/30 days back), each labelled by the items bought in ``[cutoff, cutoff + w)``
   (so every label lies before ``as_of``). Candidates (history + ALS + item-kNN + popular) and
   their features come from the artifact's own code, so training and serving cannot disagree.
2. A random ``holdout`` share of users is kept out of the re-ranker's training; on them, at the
   first cutoff (validation window ``[as_of - 90 d, as_of)``), every strategy is scored by
   NDCG@10: popularity, buy-again (popularity weight chosen there), ALS, item-kNN, re-ranker.
   The best strategy is used for "all items" and for "new items only"; a strategy that does not
   beat popularity is never chosen. Cold-user popularity (window, country weight) is chosen on
   the users who first bought in the validation window.
3. The components are refitted on everything before ``as_of``; the validated re-ranker (trained
   without the held-out users, so what was validated is what ships) is attached to the artifact,
   and every known user's ranked list is precomputed for serving.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, ClassVar, Self

import lightgbm as lgb
import numpy as np
import pandas as pd
import scipy.sparse as sp
from implicit.als import AlternatingLeastSquares
from implicit.nearest_neighbours import CosineRecommender, bm25_weight
from threadpoolctl import threadpool_limits

from features.interactions import build_interactions, purchases_before
from features.schema import CATEGORY, COUNTRY, CUSTOMER_ID, ITEM_ID, ITEM_NAME, ORDER_ID, ORDERED_AT
from shopml.artifacts.recommender import (
    DEFAULT_PARAMS,
    PRECOMPUTE_WIDTH,
    RecommenderArtifact,
)
from training.base import check_fitted

log = logging.getLogger(__name__)

#: chosen on validation for fit time (<= 10 s on Online Retail): 60 trees x 15 leaves, 63 bins
#: scored NDCG@10 0.433 (all) / 0.164 (new) there, against 0.437 / 0.163 for 300 x 31 x 255.
DEFAULT_RANKER_PARAMS: dict[str, Any] = {
    "objective": "binary",
    "n_estimators": 60,
    "learning_rate": 0.15,
    "num_leaves": 15,
    "max_bin": 63,
    "min_child_samples": 50,
    "subsample": 0.8,
    "subsample_freq": 1,
    "colsample_bytree": 0.8,
    "verbose": -1,
}
NEGATIVE_RATE = 0.15  # share of negative candidates kept to train the re-ranker


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


def _days(cutoff: pd.Timestamp, times: pd.Series) -> np.ndarray:
    return np.asarray((cutoff - times).dt.total_seconds().to_numpy() / 86400.0, dtype=np.float64)


def build_state(
    orders: pd.DataFrame,
    cutoff: pd.Timestamp,
    item_ids: np.ndarray,
    *,
    items: pd.DataFrame | None = None,
    customers: pd.DataFrame | None = None,
    factors: int = 64,
    regularization: float = 0.05,
    iterations: int = 15,
    bm25_k1: float = 100.0,
    bm25_b: float = 0.8,
    knn_k: int = 100,
    random_state: int = 0,
    num_threads: int = 1,
    params: dict[str, Any] | None = None,
) -> RecommenderArtifact:
    """Fit every component on purchases before ``cutoff`` (items fixed to ``item_ids``)."""
    inter = build_interactions(orders, cutoff, weight="orders", item_ids=item_ids)
    user_ids, n_items = inter.user_ids, len(item_ids)
    n_users = len(user_ids)
    rows = purchases_before(orders, cutoff)
    u = pd.Index(user_ids).get_indexer(rows[CUSTOMER_ID].astype(str).to_numpy())
    i = pd.Index(item_ids).get_indexer(rows[ITEM_ID].astype(str).to_numpy())
    ok = (i >= 0) & (u >= 0)
    frame = pd.DataFrame(
        {
            "u": u[ok],
            "i": i[ok],
            "o": rows[ORDER_ID].astype(str).to_numpy()[ok],
            "age": _days(cutoff, rows[ORDERED_AT])[ok],
        }
    )
    # one row per (user, item, order), its age in days
    lines = frame.groupby(["u", "i", "o"], sort=False).age.min().reset_index()
    g = lines.groupby(["u", "i"], sort=True).age
    stats = pd.DataFrame(
        {
            "n": g.size(),
            "last": g.min(),
            "first": g.max(),
        }
    )
    lines["r30"] = lines.age < 30
    lines["r90"] = lines.age < 90
    stats["n30"] = lines.groupby(["u", "i"], sort=True).r30.sum()
    stats["n90"] = lines.groupby(["u", "i"], sort=True).r90.sum()
    stats = stats.reset_index()
    su, si = stats.u.to_numpy(), stats.i.to_numpy()
    indptr = np.zeros(n_users + 1, dtype=np.int64)
    np.add.at(indptr, su + 1, 1)
    indptr = np.cumsum(indptr)
    orders_u = frame.groupby("u").o.nunique().reindex(range(n_users), fill_value=0)
    age_u = frame.groupby("u").age
    n_arr = stats.n.to_numpy(np.float32)
    buyers = np.bincount(si, minlength=n_items).astype(np.float32)
    repeaters = np.bincount(si, weights=n_arr >= 2, minlength=n_items).astype(np.float32)
    rep = n_arr >= 2
    gaps = (stats["first"].to_numpy() - stats["last"].to_numpy())[rep] / (n_arr[rep] - 1)
    interval = np.full(n_items, float(np.median(gaps)) if len(gaps) else 60.0, dtype=np.float32)
    if len(gaps):
        med = pd.Series(gaps).groupby(si[rep]).median()
        interval[med.index.to_numpy()] = med.to_numpy()

    def pop(days: float | None) -> np.ndarray:
        sel = lines if days is None else lines[lines.age < days]
        pairs = sel.drop_duplicates(["u", "i"])
        return np.bincount(pairs.i.to_numpy(), minlength=n_items).astype(np.float32)

    # countries
    countries = np.array([], dtype="<U1")
    user_country = np.full(n_users, -1, dtype=np.int64)
    country_pop = np.zeros((0, n_items), dtype=np.float32)
    if customers is not None and COUNTRY in customers.columns:
        cmap = dict(
            zip(customers[CUSTOMER_ID].astype(str), customers[COUNTRY].astype(str), strict=True)
        )
        per_user = np.array([cmap.get(x, "") for x in user_ids.tolist()], dtype=str)
        countries = np.unique(per_user[per_user != ""])
        if len(countries):
            user_country = np.where(per_user != "", np.searchsorted(countries, per_user), -1)
            uc = user_country[su]
            keep = uc >= 0
            country_pop = np.zeros((len(countries), n_items), dtype=np.float32)
            np.add.at(country_pop, (uc[keep], si[keep]), 1.0)
    # item metadata
    names = np.full(n_items, "", dtype=object)
    cats = np.full(n_items, "", dtype=object)
    if items is not None and len(items):
        meta = items.assign(_id=items[ITEM_ID].astype(str)).drop_duplicates("_id").set_index("_id")
        if ITEM_NAME in meta.columns:
            names = meta[ITEM_NAME].reindex(item_ids).fillna("").astype(str).to_numpy()
        if CATEGORY in meta.columns:
            cats = meta[CATEGORY].reindex(item_ids).fillna("").astype(str).to_numpy()
    # ALS on bm25-weighted user x item
    X = inter.matrix
    with threadpool_limits(1, "blas"):
        als = AlternatingLeastSquares(
            factors=factors,
            regularization=regularization,
            iterations=iterations,
            random_state=random_state,
            num_threads=num_threads,
        )
        if X.nnz:
            als.fit(
                bm25_weight(X, K1=bm25_k1, B=bm25_b).tocsr().astype(np.float32), show_progress=False
            )
            uf = np.asarray(als.user_factors, dtype=np.float32)
            itf = np.asarray(als.item_factors, dtype=np.float32)
        else:
            uf = np.zeros((n_users, factors), dtype=np.float32)
            itf = np.zeros((n_items, factors), dtype=np.float32)
    nn_idx, nn_sim = cosine_neighbours(X, knn_k)
    return RecommenderArtifact(
        as_of=str(cutoff),
        user_ids=user_ids,
        item_ids=np.asarray(item_ids, dtype=str),
        item_names=np.asarray(names, dtype=str),
        item_categories=np.asarray(cats, dtype=str),
        countries=countries,
        user_country=user_country,
        hist_indptr=indptr,
        hist_indices=si.astype(np.int64),
        hist_n=n_arr,
        hist_last=stats["last"].to_numpy(np.float32),
        hist_first=stats["first"].to_numpy(np.float32),
        hist_n30=stats.n30.to_numpy(np.float32),
        hist_n90=stats.n90.to_numpy(np.float32),
        u_orders=orders_u.to_numpy(np.float32),
        u_days_last=age_u.min().reindex(range(n_users), fill_value=0).to_numpy(np.float32),
        u_tenure=age_u.max().reindex(range(n_users), fill_value=0).to_numpy(np.float32),
        item_buyers=buyers,
        item_repeaters=repeaters,
        item_interval=interval,
        pop30=pop(30),
        pop90=pop(90),
        popall=pop(None),
        country_pop=country_pop,
        user_factors=uf,
        item_factors=itf,
        nn_idx=nn_idx,
        nn_sim=nn_sim,
        params=dict(params or DEFAULT_PARAMS),
    )


def cosine_neighbours(X: sp.csr_matrix, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` cosine neighbours of every item (binary user x item), self excluded."""
    n = X.shape[1]
    B = X.copy().astype(np.float32)
    B.data[:] = 1.0
    knn = CosineRecommender(K=k + 1, num_threads=1)
    knn.fit(B.tocsr(), show_progress=False)
    S = knn.similarity.tocsr()
    S.setdiag(0.0)
    S.eliminate_zeros()
    k = max(min(k, n - 1), 1)
    idx = np.full((n, k), -1, dtype=np.int64)
    sim = np.zeros((n, k), dtype=np.float32)
    for j in range(n):
        lo, hi = S.indptr[j], S.indptr[j + 1]
        cols, vals = S.indices[lo:hi], S.data[lo:hi]
        order = np.lexsort((cols, -vals))[:k]
        idx[j, : len(order)] = cols[order]
        sim[j, : len(order)] = vals[order]
    return idx, sim


def window_truth(
    orders: pd.DataFrame, start: pd.Timestamp, days: int, user_ids: np.ndarray, item_ids: np.ndarray
) -> sp.csr_matrix:
    """Binary users x items: what each user bought in ``[start, start + days)``."""
    rows = purchases_before(orders, start + pd.Timedelta(days=days), start)
    return build_interactions(
        rows, None, weight="binary", user_ids=user_ids, item_ids=item_ids
    ).matrix


def training_rows(
    state: RecommenderArtifact, users: np.ndarray, truth: sp.csr_matrix, chunk: int = 512
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Re-ranker rows for ``users`` of ``state``: features, labels, position in ``users``."""
    Fs, ys, rs = [], [], []
    for start in range(0, len(users), chunk):
        rows = users[start : start + chunk]
        parts = state._parts(rows)
        r, c = np.nonzero(state.candidates(rows, parts))
        Fs.append(state.features(rows, r, c, parts))
        ys.append(np.asarray(truth[rows[r], c]).ravel() > 0)
        rs.append(r + start)
    return np.vstack(Fs), np.concatenate(ys), np.concatenate(rs)


def _evaluate(
    state: RecommenderArtifact,
    rows: np.ndarray,
    truth: list[set[int]],
    exclude: str,
    options: list[tuple[str, dict[str, Any]]],
    chunk: int = 512,
) -> list[float]:
    """NDCG@10 of each (strategy, params) option on ``rows`` (parts computed once per chunk)."""
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


def _countries(customers: pd.DataFrame | None, ids: np.ndarray) -> list[str | None]:
    if customers is None or COUNTRY not in customers.columns:
        return [None] * len(ids)
    cmap = dict(
        zip(customers[CUSTOMER_ID].astype(str), customers[COUNTRY].astype(str), strict=True)
    )
    return [cmap.get(u) for u in ids.tolist()]


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
        ranker_cutoffs: tuple[tuple[int, int], ...] = ((90, 90), (60, 60), (30, 30)),
        ranker_params: dict[str, Any] | None = None,
        use_ranker: bool = True,
        holdout: float = 0.2,
        negative_rate: float = NEGATIVE_RATE,
        ba_pop_weights: tuple[float, ...] = (0.0, 0.1, 0.3, 1.0),
        cold_country_weights: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0),
        random_state: int = 0,
        num_threads: int = 1,
        precompute_width: int = PRECOMPUTE_WIDTH,
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

    # ------------------------------------------------------------------ fit
    def _state(
        self,
        orders: pd.DataFrame,
        cutoff: pd.Timestamp,
        item_ids: np.ndarray,
        items: pd.DataFrame | None,
        customers: pd.DataFrame | None,
        params: dict[str, Any],
    ) -> RecommenderArtifact:
        return build_state(
            orders,
            cutoff,
            item_ids,
            items=items,
            customers=customers,
            factors=self.factors,
            regularization=self.regularization,
            iterations=self.iterations,
            bm25_k1=self.bm25_k1,
            bm25_b=self.bm25_b,
            knn_k=self.knn_k,
            random_state=self.random_state,
            num_threads=self.num_threads,
            params=params,
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
        orders = purchases_before(orders, as_of)  # nothing on/after as_of is ever seen
        orders = orders.astype({CUSTOMER_ID: str, ITEM_ID: str, ORDER_ID: str})
        item_ids = np.unique(orders[ITEM_ID].astype(str).to_numpy())
        if len(item_ids) == 0:
            raise ValueError(f"no purchases before {as_of}: nothing to fit")
        params: dict[str, Any] = {
            **DEFAULT_PARAMS,
            "n_als": self.n_als,
            "n_knn": self.n_knn,
            "n_pop": self.n_pop,
        }
        rng = np.random.default_rng(self.random_state)
        all_users = np.unique(orders[CUSTOMER_ID].astype(str).to_numpy())
        held = set(all_users[rng.random(len(all_users)) < self.holdout].tolist())
        Xs: list[np.ndarray] = []
        ys: list[np.ndarray] = []
        hs: list[np.ndarray] = []
        val_state: RecommenderArtifact | None = None
        val_days = 0
        held_list = sorted(held)
        for d, w in self.ranker_cutoffs:
            cutoff = as_of - pd.Timedelta(days=d)
            if not (orders[ORDERED_AT] < cutoff).any():
                continue
            state = self._state(orders, cutoff, item_ids, items, customers, params)
            if val_state is None:
                val_state, val_days = state, d
            if not self.use_ranker:
                break
            truth = window_truth(orders, cutoff, min(w, d), state.user_ids, item_ids)
            users = np.flatnonzero(truth.getnnz(axis=1) > 0)
            F, y, r = training_rows(state, users, truth)
            keep = y | (rng.random(len(y)) < self.negative_rate)
            F, y, r = F[keep], y[keep], r[keep]
            Xs.append(F)
            ys.append(y)
            hs.append(np.isin(state.user_ids[users], held_list)[r])
            log.debug("cutoff %s: %d ranker rows, %.1f s", cutoff, len(y), time.perf_counter() - t0)
        ranker = None
        validation: dict[str, Any] = {}
        if val_state is not None:
            ranker, validation, chosen = self._validate(
                orders, as_of, val_state, val_days, held_list, Xs, ys, hs, customers
            )
            params.update(chosen)
        self.state_ = self._state(orders, as_of, item_ids, items, customers, params)
        self.state_.ranker = ranker
        self.state_.params["validation"] = validation
        if self.precompute_width > 0:
            self.state_.precompute(self.precompute_width, threads=self.num_threads)
        self.fit_seconds_ = time.perf_counter() - t0
        self.state_.params["fit_seconds"] = round(self.fit_seconds_, 2)
        log.info(
            "recommender fitted in %.1f s: all=%s new=%s",
            self.fit_seconds_,
            params["strategy_all"],
            params["strategy_new"],
        )
        return self

    def _validate(
        self,
        orders: pd.DataFrame,
        as_of: pd.Timestamp,
        state: RecommenderArtifact,
        days: int,
        held: list[str],
        Xs: list[np.ndarray],
        ys: list[np.ndarray],
        hs: list[np.ndarray],
        customers: pd.DataFrame | None,
    ) -> tuple[Any, dict[str, Any], dict[str, Any]]:
        """Score every strategy on held-out users of the validation window; refit the ranker."""
        cutoff = as_of - pd.Timedelta(days=days)
        item_ids = state.item_ids
        truth = window_truth(orders, cutoff, days, state.user_ids, item_ids)
        rows = np.flatnonzero((truth.getnnz(axis=1) > 0) & np.isin(state.user_ids, held))
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
                ranker = lgb.LGBMClassifier(**rparams).fit(F, y).booster_
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
        state.params = saved
        validation["ndcg@10"] = scores
        # cold users: first purchase inside the validation window
        cold_ids = np.setdiff1d(
            np.unique(purchases_before(orders, as_of, cutoff)[CUSTOMER_ID].astype(str).to_numpy()),
            state.user_ids,
        )
        if len(cold_ids):
            cold_truth = window_truth(orders, cutoff, days, cold_ids, item_ids)
            sets = [
                {
                    item_ids[j]
                    for j in cold_truth.indices[cold_truth.indptr[r] : cold_truth.indptr[r + 1]]
                }
                for r in range(len(cold_ids))
            ]
            countries = _countries(customers, cold_ids)
            best_c: tuple[float, dict[str, Any]] | None = None
            scores_c: dict[str, float] = {}
            for window in ("all", "90"):
                weights = self.cold_country_weights if len(state.countries) else (0.0,)
                for wc in weights:
                    state.params = {**saved, "cold_window": window, "cold_country_weight": wc}
                    recs = state.recommend_batch(list(cold_ids), 10, countries=countries)
                    value = ndcg_at_k(recs, sets)
                    scores_c[f"{window} country={wc}"] = round(value, 5)
                    if best_c is None or value > best_c[0]:
                        best_c = (value, {"cold_window": window, "cold_country_weight": wc})
            state.params = saved
            assert best_c is not None
            chosen.update(best_c[1])
            validation["cold_ndcg@10"] = scores_c
            validation["cold_users"] = len(cold_ids)
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
