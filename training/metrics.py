"""Offline evaluation metrics: the customer classifiers' (AUC, lift, Brier, reliability) and the
recommender's (NDCG@k)."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score


def lift_at(y: np.ndarray, score: np.ndarray, share: float = 0.1) -> float:
    """Positive rate among the top ``share`` by score, divided by the overall positive rate."""
    y = np.asarray(y, dtype=np.float64)
    k = max(1, round(len(y) * share))
    top = np.argsort(-np.asarray(score), kind="stable")[:k]
    base = y.mean()
    return float(y[top].mean() / base) if base > 0 else float("nan")


def classification_metrics(y: np.ndarray, proba: np.ndarray) -> dict[str, float]:
    """roc_auc, pr_auc (average precision), lift@10 and brier of probabilities ``proba``."""
    y = np.asarray(y)
    if len(np.unique(y)) < 2:
        return {
            "roc_auc": float("nan"),
            "pr_auc": float("nan"),
            "lift@10": float("nan"),
            "brier": float(brier_score_loss(y, proba)) if len(y) else float("nan"),
        }
    return {
        "roc_auc": float(roc_auc_score(y, proba)),
        "pr_auc": float(average_precision_score(y, proba)),
        "lift@10": lift_at(y, proba),
        "brier": float(brier_score_loss(y, proba)),
    }


def reliability_curve(y: np.ndarray, proba: np.ndarray, bins: int = 10) -> list[dict[str, float]]:
    """Mean predicted vs observed rate in equal-count bins of the prediction."""
    order = np.argsort(proba, kind="stable")
    out = []
    for chunk in np.array_split(order, bins):
        if len(chunk):
            out.append(
                {
                    "predicted": float(np.mean(proba[chunk])),
                    "observed": float(np.mean(y[chunk])),
                    "n": len(chunk),
                }
            )
    return out


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
