"""Protocol R of ``../shared/BENCHMARKS.md``: recommendations on Online Retail.

``as_of`` = 2011-09-01, test = purchases in ``[as_of, as_of + 90 d)``. R-all: truth = distinct
test items, past items may be recommended (shopml uses ``exclude="auto"``); R-new: truth = test
items never bought before, past items excluded; R-cold: users with no train purchase. Metrics at
10; users without recommendations score 0. Run as ``python -m training.benchmarks.recommend``.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import pandas as pd
import scipy.sparse as sp

from features.interactions import build_interactions, purchases_before
from features.schema import COUNTRY, CUSTOMER_ID, ITEM_ID, ORDER_ID, ORDERED_AT
from training.benchmarks import markdown_table, next_test_look, write_results
from training.recommender import RecommenderModel

log = logging.getLogger(__name__)

AS_OF = pd.Timestamp("2011-09-01")
#: validation replay: the same protocol 90 days earlier; its window ends at AS_OF (no test label)
VALIDATION_AS_OF = pd.Timestamp("2011-06-03")
TEST_DAYS = 90
K = 10
THREADS = 2


def ranking_metrics(
    recs: list[list[str]], truth: list[set[str]], n_train_items: int, k: int = K
) -> dict[str, float]:
    """NDCG, recall, precision, hit rate, MAP at k and catalog coverage (protocol R)."""
    disc = 1.0 / np.log2(np.arange(2, k + 2))
    tot = dict.fromkeys(("ndcg", "recall", "precision", "hitrate", "map"), 0.0)
    seen: set[str] = set()
    for r, rel in zip(recs, truth, strict=True):
        r = r[:k]
        seen.update(r)
        hits = np.array([x in rel for x in r], dtype=float)
        if not len(hits) or not rel:
            continue
        h = hits.sum()
        tot["ndcg"] += (hits * disc[: len(hits)]).sum() / disc[: min(len(rel), k)].sum()
        tot["recall"] += h / len(rel)
        tot["precision"] += h / k
        tot["hitrate"] += float(h > 0)
        if h:
            prec = np.cumsum(hits) / np.arange(1, len(hits) + 1)
            tot["map"] += (prec * hits).sum() / min(len(rel), k)
    n = max(len(truth), 1)
    out = {f"{m}@{k}": round(float(v) / n, 4) for m, v in tot.items()}
    out["coverage"] = round(len(seen) / max(n_train_items, 1), 4)
    return out


def user_ndcg(recs: list[list[str]], truth: list[set[str]], k: int = K) -> np.ndarray:
    """NDCG@k of each user (binary relevance; 0 without recommendations or relevant items):
    the per-user terms whose mean is :func:`ranking_metrics`' ``ndcg@k``."""
    disc = 1.0 / np.log2(np.arange(2, k + 2))
    out = np.zeros(len(truth))
    for j, (r, rel) in enumerate(zip(recs, truth, strict=True)):
        hits = np.array([x in rel for x in r[:k]], dtype=float)
        if len(hits) and rel:
            out[j] = (hits * disc[: len(hits)]).sum() / disc[: min(len(rel), k)].sum()
    return out


@dataclass
class Protocol:
    """Train matrix, evaluated users and ground truth of protocol R."""

    orders: pd.DataFrame
    customers: pd.DataFrame | None
    X: sp.csr_matrix  # train users x train items, number of orders
    user_ids: np.ndarray
    item_ids: np.ndarray
    warm: np.ndarray  # train rows of R-all users
    truth_all: list[set[str]]
    new_rows: np.ndarray  # positions in warm of R-new users
    truth_new: list[set[str]]
    cold_ids: list[str]
    truth_cold: list[set[str]]
    as_of: pd.Timestamp = AS_OF


def protocol(
    orders: pd.DataFrame, customers: pd.DataFrame | None = None, as_of: pd.Timestamp = AS_OF
) -> Protocol:
    """Build protocol R's populations and truth (the ``TEST_DAYS`` after ``as_of``)."""
    orders = purchases_before(orders, None).astype({CUSTOMER_ID: str, ITEM_ID: str})
    inter = build_interactions(orders, as_of, weight="orders")
    test = purchases_before(orders, as_of + pd.Timedelta(days=TEST_DAYS), as_of)
    test_items = test.groupby(CUSTOMER_ID)[ITEM_ID].agg(set)
    train = purchases_before(orders, as_of)
    bought = train.groupby(CUSTOMER_ID)[ITEM_ID].agg(set)
    uidx = inter.user_index()
    warm_ids = [u for u in test_items.index if u in uidx]
    cold_ids = [u for u in test_items.index if u not in uidx]
    truth_all = [test_items[u] for u in warm_ids]
    truth_new_all = [test_items[u] - bought[u] for u in warm_ids]
    new_rows = np.array([i for i, t in enumerate(truth_new_all) if t], dtype=np.int64)
    return Protocol(
        orders=orders,
        customers=customers,
        X=inter.matrix,
        user_ids=inter.user_ids,
        item_ids=inter.item_ids,
        warm=np.array([uidx[u] for u in warm_ids], dtype=np.int64),
        truth_all=truth_all,
        new_rows=new_rows,
        truth_new=[truth_new_all[i] for i in new_rows],
        cold_ids=cold_ids,
        truth_cold=[test_items[u] for u in cold_ids],
        as_of=as_of,
    )


def _topk_ids(
    p: Protocol, scores: np.ndarray, exclude: np.ndarray | None = None
) -> list[list[str]]:
    s = np.array(scores, dtype=np.float64)
    if exclude is not None:
        s[exclude] = -np.inf
    idx = np.argsort(-s, axis=1, kind="stable")[:, :K]
    vals = np.take_along_axis(s, idx, axis=1)
    return [p.item_ids[i[np.isfinite(v)]].tolist() for i, v in zip(idx, vals, strict=True)]


def _rows(
    p: Protocol,
    name: str,
    fit_s: float,
    all_recs: list[list[str]] | None,
    new_recs: list[list[str]] | None,
    cold_recs: list[list[str]] | None,
) -> list[dict[str, Any]]:
    n_items = len(p.item_ids)
    out = []
    for task, recs, truth in (
        ("R-all", all_recs, p.truth_all),
        ("R-new", new_recs, p.truth_new),
        ("R-cold", cold_recs, p.truth_cold),
    ):
        if recs is None:
            continue
        row = {"task": task, "model": name, "users": len(truth)}
        row.update(ranking_metrics(recs, truth, n_items))
        row["fit_s"] = round(fit_s, 2)
        out.append(row)
    return out


def _popularity(p: Protocol, days: int | None) -> np.ndarray:
    since = None if days is None else p.as_of - pd.Timedelta(days=days)
    m = build_interactions(p.orders, p.as_of, since=since, weight="binary", item_ids=p.item_ids)
    return np.asarray(m.matrix.sum(axis=0)).ravel().astype(np.float64)


def references(p: Protocol) -> list[dict[str, Any]]:
    """Every reference row of the R table (BENCHMARKS.md)."""
    from implicit.als import AlternatingLeastSquares
    from implicit.bpr import BayesianPersonalizedRanking
    from implicit.nearest_neighbours import CosineRecommender, bm25_weight
    from threadpoolctl import threadpool_limits

    rows: list[dict[str, Any]] = []
    Xw = p.X[p.warm].toarray()
    bought = Xw > 0
    bought_new = bought[p.new_rows]
    n_warm = len(p.warm)

    def both(scores: np.ndarray) -> tuple[list[list[str]], list[list[str]]]:
        return _topk_ids(p, scores), _topk_ids(p, scores[p.new_rows], bought_new)

    t = time.perf_counter()
    pop90 = _popularity(p, 90)
    fit = time.perf_counter() - t
    a, n = both(np.tile(pop90, (n_warm, 1)))
    cold90 = [_topk_ids(p, pop90[None])[0]] * len(p.cold_ids)
    rows += _rows(p, "popularity, last 90 days", fit, a, n, cold90)

    # buy-again: own items by number of orders, ties by most recent, padded with popularity
    t = time.perf_counter()
    recency = _recency(p)
    pop_n = pop90 / pop90.max()
    buy_again = Xw * 1e3 + np.where(bought, recency / 1e3 + 10, 0) + pop_n * 1e-3
    fit = time.perf_counter() - t
    rows += _rows(p, "buy-again", fit, _topk_ids(p, buy_again), None, None)

    t = time.perf_counter()
    knn = CosineRecommender(K=100, num_threads=THREADS)
    knn.fit(p.X, show_progress=False)
    fit = time.perf_counter() - t
    a, n = both((p.X[p.warm] @ knn.similarity).toarray())
    rows += _rows(p, "item-kNN cosine, K = 100", fit, a, n, None)

    def als(factors: int) -> tuple[np.ndarray, float]:
        t = time.perf_counter()
        with threadpool_limits(1, "blas"):
            m = AlternatingLeastSquares(
                factors=factors,
                regularization=0.05,
                iterations=15,
                random_state=0,
                num_threads=THREADS,
            )
            m.fit(bm25_weight(p.X, K1=100, B=0.8).tocsr().astype(np.float32), show_progress=False)
        return np.asarray(m.user_factors[p.warm] @ m.item_factors.T), time.perf_counter() - t

    s64, fit = als(64)
    a, n = both(s64)
    rows += _rows(p, "implicit ALS, bm25, 64 factors, reg 0.05, 15 it.", fit, a, n, None)
    s128, fit128 = als(128)
    a, n = both(s128)
    rows += _rows(p, "ALS tuned on validation (128 factors)", fit128, a, n, None)

    t = time.perf_counter()
    bpr = BayesianPersonalizedRanking(random_state=0, num_threads=THREADS)
    bpr.fit(p.X, show_progress=False)
    fit = time.perf_counter() - t
    a, n = both(np.asarray(bpr.user_factors[p.warm] @ bpr.item_factors.T))
    rows += _rows(p, "implicit BPR, defaults", fit, a, n, None)

    # blend: the first 8 slots from buy-again, the rest from tuned ALS (not already listed)
    ba_ids = _topk_ids(p, np.where(bought, buy_again, -np.inf))
    blend = []
    for b, r in zip(ba_ids, _topk_ids_n(p, s128, 30), strict=True):
        head = b[:8]
        blend.append((head + [x for x in r if x not in head])[:K])
    rows += _rows(p, "blend: 8 buy-again slots + tuned ALS", fit128, blend, None, None)

    t = time.perf_counter()
    scored = scored_buy_again(p, Xw, recency, pop_n)
    fit = time.perf_counter() - t
    rows += _rows(p, SCORED_BUY_AGAIN, fit, scored, None, None)

    t = time.perf_counter()
    pop_all = _popularity(p, None)
    fit = time.perf_counter() - t
    cold = [_topk_ids(p, pop_all[None])[0]] * len(p.cold_ids)
    rows += _rows(p, "cold users: popularity (all train)", fit, None, None, cold)
    return rows


SCORED_BUY_AGAIN = "buy-again scored (count x (1 + repurchase rate) + 0.3 pop)"


def _recency(p: Protocol) -> np.ndarray:
    """(R-all users x train items): days from ``as_of`` back to the user's last purchase of
    the item (negative), -1e4 for items never bought."""
    train = purchases_before(p.orders, p.as_of)
    u = pd.Index(p.user_ids).get_indexer(train[CUSTOMER_ID].to_numpy())
    i = pd.Index(p.item_ids).get_indexer(train[ITEM_ID].to_numpy())
    when = (train[ORDERED_AT] - p.as_of).dt.total_seconds().to_numpy() / 86400.0
    last = np.full(p.X.shape, -1e4)
    np.maximum.at(last, (u, i), when)
    return last[p.warm]


def scored_buy_again(
    p: Protocol,
    Xw: np.ndarray | None = None,
    recency: np.ndarray | None = None,
    pop_n: np.ndarray | None = None,
) -> list[list[str]]:
    """R-all lists of the "buy-again scored" reference: own items by number of orders x
    (1 + the item's repurchase rate) + 0.3 x 90-day popularity (share of the top item), ties by
    the most recent purchase (the arrays are computed when not given)."""
    Xw = p.X[p.warm].toarray() if Xw is None else Xw
    recency = _recency(p) if recency is None else recency
    if pop_n is None:
        pop90 = _popularity(p, 90)
        pop_n = pop90 / pop90.max()
    bought_all = (p.X > 0).sum(axis=0).A1
    repeat = (p.X >= 2).sum(axis=0).A1 / np.maximum(bought_all, 1)
    scored = Xw * (1 + repeat)[None] + 0.3 * pop_n[None] + np.where(Xw > 0, recency / 1e5, 0)
    return _topk_ids(p, scored)


#: segments of R-all users by their number of train orders: (more than, at most, label)
ORDER_SEGMENTS = ((0, 1, "1 order"), (1, 2, "2 orders"), (2, 4, "3-4 orders"), (4, 8, "5-8"))


def segments(p: Protocol, per_user: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """Mean R-all NDCG@10 of each named per-user array (:func:`user_ndcg` order) by the user's
    number of train orders (the :data:`ORDER_SEGMENTS`, then 9+ and all users), with the paired
    difference of the first two names and its standard error (standard deviation of the
    per-user differences / sqrt(users))."""
    train = purchases_before(p.orders, p.as_of)
    n_orders = train.groupby(CUSTOMER_ID)[ORDER_ID].nunique().reindex(p.user_ids[p.warm]).to_numpy()
    bins = [(n_orders > lo) & (n_orders <= hi) for lo, hi, _ in ORDER_SEGMENTS]
    bins += [n_orders > ORDER_SEGMENTS[-1][1], np.ones(len(n_orders), dtype=bool)]
    labels = [label for _, _, label in ORDER_SEGMENTS] + [
        f"{ORDER_SEGMENTS[-1][1] + 1}+",
        "all",
    ]
    names = list(per_user)
    out = []
    for sel, label in zip(bins, labels, strict=True):
        row: dict[str, Any] = {"segment": label, "users": int(sel.sum())}
        for name in names:
            row[name] = round(float(per_user[name][sel].mean()), 4) if sel.any() else None
        if len(names) >= 2 and sel.sum() > 1:
            diff = per_user[names[0]][sel] - per_user[names[1]][sel]
            row["difference"] = round(float(diff.mean()), 4)
            row["se"] = round(float(diff.std(ddof=1) / np.sqrt(sel.sum())), 4)
        out.append(row)
    return out


def _topk_ids_n(p: Protocol, scores: np.ndarray, n: int) -> list[list[str]]:
    idx = np.argsort(-scores, axis=1, kind="stable")[:, :n]
    return [p.item_ids[i].tolist() for i in idx]


def shopml_rows(
    p: Protocol, items: pd.DataFrame | None, model_factory: Callable[[], RecommenderModel]
) -> tuple[list[dict[str, Any]], RecommenderModel, list[list[str]]]:
    """Fit shopml's recommender before ``as_of`` and score it on R-all, R-new and R-cold
    (rows, the fitted model and its R-all lists)."""
    t = time.perf_counter()
    model = model_factory().fit(p.orders, p.as_of, items=items, customers=p.customers)
    fit = time.perf_counter() - t
    art = model.artifact
    warm_ids = p.user_ids[p.warm].tolist()
    all_recs = art.recommend_batch(warm_ids, K, exclude="auto")
    new_recs = art.recommend_batch([warm_ids[i] for i in p.new_rows], K, exclude="always")
    countries: list[str | None] = [None] * len(p.cold_ids)
    if p.customers is not None and COUNTRY in p.customers.columns:
        cmap = dict(
            zip(p.customers[CUSTOMER_ID].astype(str), p.customers[COUNTRY].astype(str), strict=True)
        )
        countries = [cmap.get(u) for u in p.cold_ids]
    cold_recs = art.recommend_batch(p.cold_ids, K, countries=countries)
    return _rows(p, "shopml", fit, all_recs, new_recs, cold_recs), model, all_recs


def fit_timings(dataset: Any, repeats: int = 3, threads: int = THREADS) -> dict[str, Any]:
    """Seconds of ``repeats`` fits before ``as_of`` (no test label is read), with the 1-minute
    load average after each: the machine is shared, so one timing is not enough."""
    orders = purchases_before(dataset.orders, AS_OF)
    seconds, loads = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        RecommenderModel(num_threads=threads).fit(
            orders, AS_OF, items=dataset.items, customers=dataset.customers
        )
        seconds.append(round(time.perf_counter() - t, 2))
        loads.append(round(os.getloadavg()[0], 2))
    return {"seconds": seconds, "median": float(np.median(seconds)), "load_1min": loads}


def run(
    dataset: Any, *, write: bool = True, timing_repeats: int = 3, note: str | None = None
) -> list[dict[str, Any]]:
    """Protocol R on a loaded Online Retail :class:`~features.io.Dataset`; writes the results.

    First ``timing_repeats`` fit-only timings (:func:`fit_timings`), then the evaluated fit.
    """
    timing = fit_timings(dataset, timing_repeats) if timing_repeats > 0 else None
    if timing:
        log.info("fit-only timings: %s", timing)
    p = protocol(dataset.orders, dataset.customers)
    log.info(
        "protocol R: %d R-all, %d R-new, %d cold users",
        len(p.truth_all),
        len(p.truth_new),
        len(p.truth_cold),
    )
    rows, model, _ = shopml_rows(p, dataset.items, lambda: RecommenderModel(num_threads=THREADS))
    rows += references(p)
    if write:
        write_results(
            "online-retail",
            "R",
            rows,
            as_of=str(AS_OF.date()),
            shopml_params={k: v for k, v in model.artifact.params.items()},
            fit_timing=timing,
            **next_test_look("online-retail", "R", note),
        )
    return rows


def candidate_recall(
    model: RecommenderModel, user_ids: list[str], truth: list[set[str]], k: int = K
) -> dict[str, float]:
    """How far the re-ranker's candidates limit a ranking: the share of truth items in the
    users' histories and in their candidate sets, and NDCG@k of a perfect ranking of the
    candidates (its ceiling). Users or items the model does not know count as misses."""
    art = model.artifact
    rows = pd.Index(art.user_ids).get_indexer(pd.Index(user_ids, dtype=str)).astype(np.int64)
    known = rows >= 0
    item_pos = {t: j for j, t in enumerate(art.item_ids.tolist())}
    cand = np.zeros((len(rows), art.n_items), dtype=bool)
    bought = np.zeros_like(cand)
    for start in range(0, len(rows), 512):
        sub = np.flatnonzero(known[start : start + 512]) + start
        parts = art._parts(rows[sub])
        cand[sub], bought[sub] = art.candidates(rows[sub], parts), parts["bought"]
    disc = 1.0 / np.log2(np.arange(2, k + 2))
    n_truth = in_hist = in_cand = 0
    ceiling = 0.0
    for r, rel in enumerate(truth):
        cols = [item_pos[t] for t in rel if t in item_pos]
        hits = int(cand[r, cols].sum())
        n_truth += len(rel)
        in_hist += int(bought[r, cols].sum())
        in_cand += hits
        ceiling += disc[: min(hits, k)].sum() / disc[: min(len(rel), k)].sum() if rel else 0.0
    n = max(n_truth, 1)
    return {
        "history_recall": round(in_hist / n, 4),
        "candidate_recall": round(in_cand / n, 4),
        f"ceiling_ndcg@{k}": round(float(ceiling) / max(len(truth), 1), 4),
    }


def ranker_alone_lists(
    model: RecommenderModel, user_ids: list[str], k: int = K, chunk: int = 256
) -> list[list[str]]:
    """R-all lists (``exclude="auto"``) of the model's re-ranker alone, fusion with buy-again
    off: the product's live ranking (:meth:`RecommenderArtifact._rank`) with strategy
    ``ranker``, so the diagnostic of :func:`validate` (is the shipped fusion better out of
    time?) cannot drift from serving. Users the model does not know get no list."""
    art = model.artifact
    rows = pd.Index(art.user_ids).get_indexer(pd.Index(user_ids, dtype=str)).astype(np.int64)
    out: list[list[str]] = [[] for _ in user_ids]
    known = np.flatnonzero(rows >= 0)
    for start in range(0, len(known), chunk):
        pos = known[start : start + chunk]
        allowed = art._allowed(rows[pos], "auto", None, ())
        top, _, _ = art._rank(rows[pos], k, "auto", allowed, strategy="ranker")
        for j, t in zip(pos, top, strict=True):
            out[j] = art.item_ids[t[t >= 0]].tolist()
    return out


def validate(
    dataset: Any,
    *,
    as_of: pd.Timestamp = VALIDATION_AS_OF,
    seeds: tuple[int, ...] = (0, 1, 2),
    write: bool = True,
    model_params: dict[str, Any] | None = None,
    with_references: bool = True,
) -> list[dict[str, Any]]:
    """Protocol R replayed at ``as_of`` (default :data:`VALIDATION_AS_OF`) on orders before
    :data:`AS_OF` (no test label is read; the replay's window must end by then); one shopml
    row per task and seed (``random_state``), plus their mean, and the candidate diagnostics
    (:func:`candidate_recall`) of the first seed's model, every reference row on the same replay
    (``with_references``) and R-all NDCG@10 by user segment against the buy-again scored
    reference (:func:`segments`) and the shipped lists against the re-ranker alone (paired, the
    ``fusion`` strategy's out-of-time gain; :func:`ranker_alone_lists`) with each seed's all-items
    strategy. Results of another ``as_of`` go to ``online-retail-R-validation-<date>``."""
    as_of = pd.Timestamp(as_of)
    if as_of + pd.Timedelta(days=TEST_DAYS) > AS_OF:
        raise ValueError(
            f"validation as_of {as_of.date()} + {TEST_DAYS} days reaches past {AS_OF.date()} "
            "(the test window); use an earlier date"
        )
    orders = purchases_before(dataset.orders, AS_OF)
    p = protocol(orders, dataset.customers, as_of)
    rows: list[dict[str, Any]] = []
    diagnostics: dict[str, dict[str, float]] = {}
    per_seed: list[np.ndarray] = []
    alone: list[np.ndarray] = []
    chosen: list[str] = []
    for seed in seeds:
        params = {"num_threads": THREADS, **(model_params or {}), "random_state": seed}
        got, model, recs = shopml_rows(
            p, dataset.items, functools.partial(RecommenderModel, **params)
        )
        rows += [{**r, "model": f"shopml seed {seed}"} for r in got]
        per_seed.append(user_ndcg(recs, p.truth_all))
        warm_ids = p.user_ids[p.warm].tolist()
        alone.append(user_ndcg(ranker_alone_lists(model, warm_ids), p.truth_all))
        chosen.append(str(model.artifact.params["strategy_all"]))
        if not diagnostics:
            warm = p.user_ids[p.warm].tolist()
            diagnostics = {
                "R-all": candidate_recall(model, warm, p.truth_all),
                "R-new": candidate_recall(model, [warm[i] for i in p.new_rows], p.truth_new),
            }
            log.info("candidates (seed %d): %s", seed, diagnostics)
    for task in ("R-all", "R-new", "R-cold"):
        mine = [r for r in rows if r["task"] == task]
        mean = {
            k: round(float(np.mean([r[k] for r in mine])), 4)
            for k in mine[0]
            if k not in ("task", "model", "users")
        }
        rows.append({"task": task, "model": "shopml mean", "users": mine[0]["users"], **mean})
    # the reference rows on the same replay, and shopml (mean over seeds) against the best
    # simple reference per user segment: is the re-ranker's gain real, and for whom
    rows += references(p) if with_references else []
    by_segment = segments(
        p,
        {
            "shopml mean": np.mean(per_seed, axis=0),
            "buy-again scored": user_ndcg(scored_buy_again(p), p.truth_all),
        },
    )
    log.info("R-all NDCG@10 by train orders: %s", by_segment)
    diff = np.mean(per_seed, axis=0) - np.mean(alone, axis=0)
    fusion = {
        "strategy_all_per_seed": chosen,
        "ranker_alone_ndcg@10_per_seed": [round(float(f.mean()), 4) for f in alone],
        "ranker_alone_ndcg@10": round(float(np.mean(alone)), 4),
        "shipped_minus_ranker_alone": round(float(diff.mean()), 4),
        "se": round(float(diff.std(ddof=1) / np.sqrt(max(len(diff), 1))), 4)
        if len(diff) > 1
        else None,
    }
    log.info("R-all shipped lists against the re-ranker alone: %s", fusion)
    if write:
        end = (as_of + pd.Timedelta(days=TEST_DAYS)).date()
        path = write_results(
            "online-retail",
            "R",
            rows,
            as_of=str(as_of.date()),
            stem="online-retail-R-validation"
            + ("" if as_of == VALIDATION_AS_OF else f"-{as_of.date()}"),
            note=f"validation replay: as_of {as_of.date()}, window ends {end}",
            model_params=model_params or {},
            candidates=diagnostics,
            segments=by_segment,
            fusion_diagnostic=fusion,
        )
        md = path.with_suffix(".md")
        md.write_text(
            md.read_text()
            + "\nR-all NDCG@10 by the user's number of train orders: shopml (mean of the seeds)"
            + " against the buy-again scored reference, paired difference and its standard error"
            + "\n\n"
            + markdown_table(by_segment)
            + f"\nAll-items strategy per seed: {', '.join(chosen)}. The re-ranker alone (no "
            + f"fusion with buy-again) scores R-all NDCG@10 {fusion['ranker_alone_ndcg@10']} "
            + f"(seeds {fusion['ranker_alone_ndcg@10_per_seed']}); shipped minus re-ranker "
            + f"alone, paired: {fusion['shipped_minus_ranker_alone']} (SE {fusion['se']})\n"
        )
    return rows


#: the one-year synthetic shops with a gift season of the demand model's ramp check
#: (``shopml demo-data --customers 20000 --items 400 --start 2010-12-01 --end 2011-12-10``)
SEASON_SHOP = {"customers": 20000, "items": 400, "start": "2010-12-01", "end": "2011-12-10"}


def season_check(
    folders: list[str],
    *,
    as_of: pd.Timestamp = AS_OF,
    random_states: tuple[int, ...] = (0, 1, 2),
    write: bool = True,
) -> list[dict[str, Any]]:
    """Protocol R on synthetic shops with a gift season, fitted at ``as_of`` with and without
    the gift-season prior (``season_prior``): NDCG@10 on the next 90 days, the paired per-user
    difference (SE) and the share of top-10 slots and of truth items in gift categories.
    The one validation of the prior that can fail (no Online Retail window before the test
    holds the autumn)."""
    from features.io import load_dataset
    from features.synthetic import CATEGORIES

    gift_cats = {c.name for c in CATEGORIES if c.gift}
    rows: list[dict[str, Any]] = []
    for folder in folders:
        ds = load_dataset(folder)
        if ds.items is None:
            raise ValueError(f"{folder}: no items table (categories are needed)")
        p = protocol(ds.orders, ds.customers, as_of)
        cat = ds.items.set_index(ds.items[ITEM_ID].astype(str))["category"].astype(str)
        gift = set(cat.index[cat.isin(gift_cats)])
        truth_share = float(np.mean([x in gift for t in p.truth_all for x in t]))
        per: dict[bool, list[np.ndarray]] = {False: [], True: []}
        for rs in random_states:
            for on in (False, True):
                params: dict[str, Any] = {
                    "num_threads": THREADS,
                    "random_state": rs,
                    "season_prior": on,
                }
                got, model, recs = shopml_rows(
                    p, ds.items, functools.partial(RecommenderModel, **params)
                )
                per[on].append(user_ndcg(recs, p.truth_all))
                r_all = next(r for r in got if r["task"] == "R-all")
                r_new = next(r for r in got if r["task"] == "R-new")
                art = model.artifact
                rows.append(
                    {
                        "shop": folder,
                        "random_state": rs,
                        "season_prior": on,
                        "strategy_all": art.params["strategy_all"],
                        "R-all ndcg@10": r_all["ndcg@10"],
                        "R-new ndcg@10": r_new["ndcg@10"],
                        "gift share of top-10 slots": round(
                            float(np.mean([x in gift for r in recs for x in r[:K]])), 4
                        ),
                        "gift share of truth items": round(truth_share, 4),
                        "gift items with prior > 0": int(
                            sum(
                                v > 0 and i in gift
                                for i, v in zip(art.item_ids, art.item_season, strict=False)
                            )
                        ),
                    }
                )
                log.info("%s", rows[-1])
        diff = np.mean(per[True], axis=0) - np.mean(per[False], axis=0)
        rows.append(
            {
                "shop": folder,
                "random_state": "mean",
                "season_prior": "on - off",
                "R-all ndcg@10": round(float(diff.mean()), 4),
                "se": round(float(diff.std(ddof=1) / np.sqrt(len(diff))), 4),
                "users": len(diff),
            }
        )
        log.info("%s", rows[-1])
    if write:
        write_results(
            "online-retail",
            "R",
            rows,
            as_of=str(as_of.date()),
            stem="online-retail-R-season-synthetic",
            note="gift-season prior on synthetic one-year shops "
            f"({SEASON_SHOP}), with and without, R-all at {as_of.date()}",
        )
    return rows


def main() -> None:
    """Load ``../shared/data/online_retail`` and run protocol R (``--time-fit N``: only time N
    fits, no evaluation and no test label read)."""
    import argparse

    from features.io import load_dataset

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--time-fit", type=int, default=0, metavar="N")
    parser.add_argument("--note", default=None, help="what changed since the last test look")
    parser.add_argument(
        "--validation", action="store_true", help="validation replay only (no test label read)"
    )
    parser.add_argument(
        "--validation-as-of",
        type=pd.Timestamp,
        default=None,
        metavar="DATE",
        help=f"as_of of the replay; implies --validation (default {VALIDATION_AS_OF.date()}; its "
        f"{TEST_DAYS}-day window must end by {AS_OF.date()})",
    )
    parser.add_argument(
        "--season-check",
        nargs="+",
        default=None,
        metavar="DIR",
        help="synthetic one-year shops (demo-data folders): R at the test as_of with and "
        "without the gift-season prior (see season_check)",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.season_check:
        season_check(args.season_check)
        return
    dataset = load_dataset("../shared/data/online_retail/online_retail.parquet")
    if args.time_fit:
        log.info("fit-only timings: %s", fit_timings(dataset, args.time_fit))
        return
    if args.validation or args.validation_as_of is not None:
        rows = validate(dataset, as_of=args.validation_as_of or VALIDATION_AS_OF)
    else:
        rows = run(dataset, note=args.note)
    for row in rows:
        log.info("%s", row)


if __name__ == "__main__":
    main()
