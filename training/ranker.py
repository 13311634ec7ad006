"""The LightGBM re-ranker: its training rows (labelled candidates) and its fit."""

from __future__ import annotations

from typing import Any

import lightgbm as lgb
import numpy as np
import scipy.sparse as sp

from shopml.artifacts.recommender import FEATURES, RankerEnsemble, RecommenderArtifact, row_chunk

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
#: Seed-averaged re-rankers (``RecommenderModel(ranker_bags=B)``, :class:`RankerEnsemble`; the
#: three replays 2011-06-03 / 04-18 / 05-10, 3 seeds, paired per fit): 2 bags +0.0004 R-all
#: (fit-level SE 0.0003), +0.0009 R-new (SE 0.0004); 3 bags +0.0005 / +0.0007; on top of the
#: averaged ALS +0.0006 (SE 0.0004) / +0.0009 (SE 0.0002), for +1.2 s of fit (median 6.81 ->
#: 8.04 s under the bench lock): 2 bags by default (``RecommenderModel.ranker_bags``).
#: Item-name similarity features (``txt``, ``txt_recent``, ``txt_mean``; see
#: ``training/recommender.py`` point 8), same three replays, seeds 0-5, paired per fit: R-all
#: +0.0016 (SE 0.0004), R-new +0.0050 (SE 0.0008). Within noise or worse in the same session
#: (9 fits): kNN and basket-kNN against the user's last order only +0.0003 (SE 0.0007) / R-new
#: -0.0004; days since the user last bought the item over the user's own gap between its
#: purchases -0.0006 (SE 0.0004) / +0.0004.
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
    F, y, r, _ = labelled_rows(state, users, truth, rng, negative_rate, chunk)
    return F, y, r


def labelled_rows(
    state: RecommenderArtifact,
    users: np.ndarray,
    truth: sp.csr_matrix,
    rng: np.random.Generator,
    negative_rate: float,
    chunk: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """:func:`training_rows` and each row's item column (to label the same rows again)."""
    chunk = chunk or row_chunk(state.n_items)
    Fs, ys, rs, cs = [], [], [], []
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
        cs.append(c)
    if not Fs:
        empty = np.zeros(0, dtype=np.int64)
        return np.zeros((0, len(FEATURES))), np.zeros(0, dtype=bool), empty, empty
    return np.vstack(Fs), np.concatenate(ys), np.concatenate(rs), np.concatenate(cs)


def relabel(
    y: np.ndarray,
    labels: np.ndarray,
    rng: np.random.Generator,
    negative_rate: float,
) -> np.ndarray:
    """Rows of :func:`labelled_rows` (labels ``y``) to keep for other ``labels`` of the same
    candidates that are positive only where ``y`` is (e.g. a shorter window from the same
    cutoff): every new positive, and the rows that turn negative with probability
    ``negative_rate``, so each negative is kept at that rate as in the original rows."""
    return labels | ~y | (rng.random(len(y)) < negative_rate)


def bag_seed(seed: int | None, b: int) -> int | None:
    """LightGBM ``random_state`` of the ``b``-th re-ranker of an ensemble: ``seed`` itself for
    the first (so one bag is the single re-ranker), distinct fixed offsets for the others."""
    if b == 0:
        return seed
    return (int(seed or 0) + 104_729 * b) % 2**31


def fit_ranker(
    F: np.ndarray, y: np.ndarray, groups: np.ndarray, params: dict[str, Any], bags: int = 1
) -> Any:
    """LightGBM re-ranker: a binary classifier, or a ranker over ``groups`` (contiguous ids)
    when ``params["objective"]`` is a ranking objective. Returns the booster, or with
    ``bags`` > 1 a :class:`RankerEnsemble` of boosters fitted with :func:`bag_seed` seeds on
    the same rows (their bagging and feature subsampling differ: ``subsample`` and
    ``colsample_bytree`` < 1)."""
    if bags < 1:
        raise ValueError(f"bags must be >= 1, got {bags}")
    boosters = [
        _fit_one(F, y, groups, {**params, "random_state": bag_seed(params.get("random_state"), b)})
        for b in range(bags)
    ]
    return boosters[0] if bags == 1 else RankerEnsemble(boosters)


def _fit_one(F: np.ndarray, y: np.ndarray, groups: np.ndarray, params: dict[str, Any]) -> Any:
    """One LightGBM booster (see :func:`fit_ranker`)."""
    if params.get("objective") in ("lambdarank", "rank_xendcg"):
        starts = np.flatnonzero(np.r_[True, groups[1:] != groups[:-1]])
        sizes = np.diff(np.r_[starts, len(groups)])
        return lgb.LGBMRanker(**params).fit(F, y.astype(np.int32), group=sizes).booster_
    return lgb.LGBMClassifier(**params).fit(F, y).booster_
