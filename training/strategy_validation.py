"""Choosing the recommender's strategies on a validation window (NDCG@10 of held-out users).

:func:`choose_strategies` scores every strategy (popularity, buy-again at each popularity weight,
ALS, item-kNN, the re-ranker) for "all items" and for "new items only" and keeps the best of
each (for "all items", the re-ranker is rank-fused with buy-again when an out-of-time check
says so, see :func:`choose_strategies`); :func:`choose_cold_popularity` picks the cold-start popularity (window, country weight) on
the users whose first purchase falls in the window. Both return the chosen
:class:`~shopml.artifacts.recommender.RecommenderArtifact` parameters and the validation entries.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from shopml.artifacts.recommender import RecommenderArtifact, row_chunk, topk
from training.encoded_shop import Shop
from training.metrics import ndcg_at_k
from training.recommender_caps import capped_sample

#: validation users x items up to which each user's re-ranker scores are kept (float64, 128 MB)
#: and reused by :func:`choose_strategies` for "all items", "new items" and the fusion
RANKER_CACHE_CELLS = 1 << 24


def evaluate_strategies(
    state: RecommenderArtifact,
    rows: np.ndarray,
    truth: list[set[int]],
    exclude: str,
    options: list[tuple[str, dict[str, Any]]],
    chunk: int | None = None,
    ranker_cache: dict[int, np.ndarray] | None = None,
) -> list[float]:
    """NDCG@10 of each (strategy, params) option on ``rows`` (parts computed once per chunk).

    The re-ranker's scores are computed once per chunk for the ``ranker`` and ``fusion``
    options alike: over every item, then masked. With ``ranker_cache`` (row -> scores, for one
    re-ranker), a chunk whose rows are all there takes their scores from it, and computed scores
    are stored in it, so several calls on the same users score each of them once. With ``exclude`` "auto" or "always" and no
    other filter that ranks exactly as :meth:`RecommenderArtifact._rank` (the allowed items
    differ from all items only by past items, which are candidates either way and whose
    exclusion does not change the ALS/kNN candidates, picked among unbought items)."""
    if exclude not in ("auto", "always"):
        raise ValueError(f"exclude must be 'auto' or 'always' here, got {exclude!r}")
    chunk = chunk or row_chunk(state.n_items)
    saved = dict(state.params)
    recs: list[list[list[int]]] = [[] for _ in options]
    try:
        for start in range(0, len(rows), chunk):
            sub = rows[start : start + chunk]
            parts = state._parts(sub)
            allowed = state._allowed(sub, exclude, None, ())
            ranker: np.ndarray | None = None
            for o, (name, extra) in enumerate(options):
                state.params = {**saved, **extra}
                strategy = state._strategy(exclude, name)
                if strategy in ("ranker", "fusion"):
                    if ranker is None:
                        ranker = _ranker_scores(state, sub, parts, ranker_cache)
                    s = ranker
                    if strategy == "fusion":
                        s = state._fusion_scores(sub, parts, ranker=ranker)
                    top, _ = topk(np.where(allowed, s, -np.inf), 10)
                else:
                    top, _, _ = state._rank(sub, 10, exclude, allowed, strategy=name, parts=parts)
                recs[o] += [t[t >= 0].tolist() for t in top]
    finally:
        state.params = saved
    return [ndcg_at_k(r, truth) for r in recs]


def _ranker_scores(
    state: RecommenderArtifact,
    rows: np.ndarray,
    parts: dict[str, Any],
    cache: dict[int, np.ndarray] | None,
) -> np.ndarray:
    """Dense re-ranker scores of ``rows`` (every item), through ``cache`` when given."""
    if cache is not None and all(r in cache for r in rows.tolist()):
        return np.vstack([cache[r] for r in rows.tolist()])
    scores = state._dense_scores(rows, "ranker", parts, None)
    if cache is not None:
        cache.update(zip(rows.tolist(), scores, strict=True))
    return scores


def choose_strategies(
    state: RecommenderArtifact,
    rows: np.ndarray,
    truth: sp.csr_matrix,
    ranker: Any,
    ba_pop_weights: tuple[float, ...],
    fusion_weight: float = 0.0,
    fusion_check: Callable[[dict[str, Any]], tuple[float, float, int]] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The best strategy for "all items" and for "new items only" on ``rows`` of ``state``
    (``truth``: their purchases in the window, one row each), ``ranker`` attached to ``state``:
    the chosen parameters and the validation entries (headline NDCG@10 of each choice, and
    every option's score).

    Fusion: when the re-ranker is best for "all items", buy-again (at its best popularity
    weight) beats popularity and ``fusion_weight`` > 0, "all items" is answered by their rank
    fusion (``fusion``, buy-again weighted ``fusion_weight``) if ``fusion_check(params)`` (a
    re-ranker labelled before a later window, scored on that window: ``(ranker, fusion,
    users)`` NDCG@10) finds the fusion better, and it beats popularity here. Its score here
    does not decide: the re-ranker is labelled on this same window (other users), which
    flatters it against any blend (see ``training/recommender.py``)."""
    chosen: dict[str, Any] = {}
    validation: dict[str, Any] = {}
    truth_all = [set(truth.indices[truth.indptr[r] : truth.indptr[r + 1]].tolist()) for r in rows]
    bought = [
        set(state.hist_indices[state.hist_indptr[r] : state.hist_indptr[r + 1]].tolist())
        for r in rows
    ]
    truth_new = [t - b for t, b in zip(truth_all, bought, strict=True)]
    scores: dict[str, dict[str, float]] = {"all": {}, "new": {}}
    saved = dict(state.params)
    options: list[tuple[str, dict[str, Any]]] = [("popular", {})]
    options += [("buy-again", {"ba_pop_weight": w}) for w in ba_pop_weights]
    options += [("als", {}), ("knn", {})]
    if ranker is not None:
        options.append(("ranker", {}))
    state.ranker = ranker
    # each user's re-ranker scores, computed once for both modes and the fusion (small shops)
    cache: dict[int, np.ndarray] | None = (
        {} if len(rows) * state.n_items <= RANKER_CACHE_CELLS else None
    )
    for mode, exclude, truth_sets in (("all", "auto", truth_all), ("new", "always", truth_new)):
        keep = np.array([i for i, t in enumerate(truth_sets) if t], dtype=np.int64)
        opts = [o for o in options if not (mode == "new" and o[0] == "buy-again")]
        values = evaluate_strategies(
            state, rows[keep], [truth_sets[i] for i in keep], exclude, opts, ranker_cache=cache
        )
        best: tuple[float, dict[str, Any]] | None = None
        again: tuple[float, dict[str, Any]] | None = None  # the best buy-again option
        for (name, extra), value in zip(opts, values, strict=True):
            label = name if not extra else f"{name} w={extra['ba_pop_weight']}"
            scores[mode][label] = round(value, 5)
            if best is None or value > best[0]:
                best = (value, {f"strategy_{mode}": name, **extra})
            if name == "buy-again" and (again is None or value > again[0]):
                again = (value, extra)
        assert best is not None
        if mode == "all" and best[1]["strategy_all"] == "ranker" and fusion_weight > 0:
            sets = [truth_sets[i] for i in keep]
            best, check = _fusion(
                state,
                rows[keep],
                sets,
                best,
                again,
                scores["all"],
                fusion_weight,
                fusion_check,
                cache,
            )
            if check:
                validation["fusion_check"] = check
        chosen.update(best[1])
        validation[f"ndcg@10_{mode}"] = round(best[0], 5)  # headline: the chosen strategy
    state.params = saved
    validation["ndcg@10"] = scores  # every candidate, labelled (not a headline metric)
    return chosen, validation


def _fusion(
    state: RecommenderArtifact,
    rows: np.ndarray,
    truth: list[set[int]],
    best: tuple[float, dict[str, Any]],
    again: tuple[float, dict[str, Any]] | None,
    scores: dict[str, float],
    weight: float,
    check: Callable[[dict[str, Any]], tuple[float, float, int]] | None,
    cache: dict[int, np.ndarray] | None = None,
) -> tuple[tuple[float, dict[str, Any]], dict[str, Any]]:
    """``best`` (the re-ranker) or its rank fusion with the best buy-again option ``again``
    (see :func:`choose_strategies`), and the out-of-time check's scores (empty when it did not
    run); ``scores``: every "all items" option's NDCG@10 (the fusion's is added as
    ``fusion``)."""
    if check is None or again is None or again[0] <= scores["popular"]:
        return best, {}
    extra = {**again[1], "fusion_weight": weight}
    ranker, fused, users = check(extra)
    out = {"ranker": round(ranker, 5), "fusion": round(fused, 5), "users": users, **extra}
    if fused <= ranker:
        return best, out
    (value,) = evaluate_strategies(
        state, rows, truth, "auto", [("fusion", extra)], ranker_cache=cache
    )
    scores["fusion"] = round(value, 5)
    if value <= scores["popular"]:
        return best, out
    return (value, {"strategy_all": "fusion", **extra}), out


def choose_cold_popularity(
    shop: Shop,
    state: RecommenderArtifact,
    cutoff: pd.Timestamp,
    as_of: pd.Timestamp,
    days: int,
    country_weights: tuple[float, ...],
    max_users: int | None,
    seed: int,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The cold-start popularity (window, country weight) of ``state`` scoring best on the users
    whose first purchase falls in ``[cutoff, as_of)`` (at most ``max_users``, drawn with
    ``seed``), on their purchases over ``days``: the chosen parameters and the validation
    entries (both empty when no user is cold)."""
    chosen: dict[str, Any] = {}
    validation: dict[str, Any] = {}
    recent = np.unique(shop.user[shop.window(cutoff, as_of)])
    # first order in the window (snapshots may hold a sample of users: not the state's users)
    cold = np.setdiff1d(recent, shop.user[shop.window(None, cutoff)])
    cold = cold[capped_sample(len(cold), max_users, [seed, 10])]
    if not len(cold):
        return chosen, validation
    cold_truth = shop.truth(cutoff, days, cold)
    sets = [
        set(state.item_ids[cold_truth.indices[cold_truth.indptr[r] : cold_truth.indptr[r + 1]]])
        for r in range(len(cold))
    ]
    cc = shop.user_country[cold]
    countries = [str(shop.countries[c]) if c >= 0 else None for c in cc.tolist()]
    cold_ids = shop.user_ids[cold].tolist()
    saved = dict(state.params)
    best: tuple[float, dict[str, Any]] | None = None
    scores: dict[str, float] = {}
    for window in ("all", "90"):
        weights = country_weights if len(state.countries) else (0.0,)
        for wc in weights:
            state.params = {**saved, "cold_window": window, "cold_country_weight": wc}
            recs = state.recommend_batch(cold_ids, 10, countries=countries)
            value = ndcg_at_k(recs, sets)
            scores[f"{window} country={wc}"] = round(value, 5)
            if best is None or value > best[0]:
                best = (value, {"cold_window": window, "cold_country_weight": wc})
    state.params = saved
    assert best is not None
    chosen.update(best[1])
    validation["ndcg@10_cold"] = round(best[0], 5)
    validation["cold_ndcg@10"] = scores
    validation["cold_users"] = len(cold)
    return chosen, validation
