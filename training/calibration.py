"""Calibration of the customer classifiers' raw scores: Platt or isotonic maps, cross-fitted.

:func:`fit_calibration` fits the map (a :class:`~shopml.artifacts.customers.Calibration`, which
the runtime applies). The served booster's map is fitted on out-of-fold scores
(:func:`out_of_fold_scores`): customers fall into :func:`customer_folds` by a hash of their id,
and a booster trained without a fold scores it, so the map belongs to boosters trained like the
served one (see :mod:`training.customers`).
"""

from __future__ import annotations

from collections.abc import Callable

import lightgbm as lgb
import numpy as np
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

from shopml.artifacts.customers import Calibration
from training.snapshots import id_hash

CV_FOLDS = 5  # customer folds of the cross-fitted calibration
SAMPLED_CV_FOLDS = 3  # at most this many when the training population is a sample (above the cap)


def fit_calibration(raw: np.ndarray, y: np.ndarray, method: str) -> Calibration:
    """Platt (logistic on the raw score) or isotonic calibration fitted on validation scores."""
    raw = np.asarray(raw, dtype=np.float64)
    if len(np.unique(y)) < 2:
        return Calibration("platt", 0.0, float(np.log((y.mean() + 1e-6) / (1 - y.mean() + 1e-6))))
    if method == "isotonic":
        iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(raw, y)
        return Calibration(
            "isotonic", x=np.asarray(iso.X_thresholds_), y=np.asarray(iso.y_thresholds_)
        )
    lr = LogisticRegression(C=1e4).fit(raw.reshape(-1, 1), y)
    return Calibration("platt", float(lr.coef_[0, 0]), float(lr.intercept_[0]))


def customer_folds(ids: np.ndarray, k: int) -> np.ndarray:
    """Fold 0..k-1 of each customer id (a stable hash: the same id always gets the same fold)."""
    return np.asarray(id_hash(ids) % np.uint64(k), dtype=np.int64)


def out_of_fold_scores(
    X: np.ndarray,
    y: np.ndarray,
    fold: np.ndarray,
    rows: np.ndarray,
    folds: int,
    train: Callable[[np.ndarray, np.ndarray], lgb.Booster],
) -> np.ndarray:
    """Raw score of each row where ``rows`` is True by a booster ``train(X, y)`` fitted without
    the row's ``fold`` (0..``folds``-1); NaN elsewhere and where no such booster can be fitted."""
    oof = np.full(len(y), np.nan)
    for k in range(folds):
        held = fold == k
        score = held & rows
        if score.any() and (~held).any():
            b = train(X[~held], y[~held])
            oof[score] = b.predict(X[score], raw_score=True)
    return oof
