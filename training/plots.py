"""Plots a person would rather look at than a table, logged with every training run.

Each function takes plain arrays and returns a matplotlib Figure (Agg backend, nothing shown).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure
from sklearn.calibration import calibration_curve
from sklearn.metrics import roc_curve


def roc(y: np.ndarray, scores: Mapping[str, np.ndarray], title: str) -> Figure:
    """ROC curves of a model and its baselines on one backtest."""
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for name, s in scores.items():
        fpr, tpr, _ = roc_curve(y, s)
        auc = np.trapezoid(tpr, fpr)
        ax.plot(fpr, tpr, label=f"{name} (AUC {auc:.3f})", lw=2 if name == "shopml" else 1)
    ax.plot([0, 1], [0, 1], ls=":", c="grey")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=title)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


def gains(y: np.ndarray, scores: Mapping[str, np.ndarray], title: str) -> Figure:
    """Cumulative gains: share of positives found when contacting the top x% by score."""
    fig, ax = plt.subplots(figsize=(5.5, 5))
    share = np.arange(1, len(y) + 1) / len(y)
    for name, s in scores.items():
        found = np.cumsum(y[np.argsort(-s, kind="stable")]) / max(y.sum(), 1)
        lift10 = found[max(int(0.1 * len(y)) - 1, 0)] / 0.1
        ax.plot(
            share, found, label=f"{name} (lift@10% {lift10:.2f})", lw=2 if name == "shopml" else 1
        )
    ax.plot([0, 1], [0, 1], ls=":", c="grey", label="random")
    ax.set(xlabel="share of customers contacted", ylabel="share of positives found", title=title)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


def calibration(y: np.ndarray, prob: np.ndarray, title: str, bins: int = 10) -> Figure:
    """Reliability curve: observed rate against predicted probability, with the score histogram."""
    fig, (ax, hist) = plt.subplots(
        2, 1, figsize=(5.5, 6), gridspec_kw={"height_ratios": [3, 1]}, sharex=True
    )
    observed, predicted = calibration_curve(y, prob, n_bins=bins, strategy="quantile")
    ax.plot(predicted, observed, marker="o", label="shopml")
    ax.plot([0, 1], [0, 1], ls=":", c="grey", label="perfectly calibrated")
    ax.set(ylabel="observed rate", title=title)
    ax.legend(loc="upper left", fontsize=8)
    hist.hist(prob, bins=30, color="grey")
    hist.set(xlabel="predicted probability", ylabel="customers")
    fig.tight_layout()
    return fig


def lines(
    x: Sequence[int], curves: Mapping[str, Sequence[float]], xlabel: str, ylabel: str, title: str
) -> Figure:
    """One line per model over ``x`` (the ``shopml`` line drawn thicker)."""
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for name, values in curves.items():
        ax.plot(x, values, marker="o", label=name, lw=2 if name == "shopml" else 1)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def metric_vs_k(
    ks: Sequence[int], curves: Mapping[str, Sequence[float]], metric: str, title: str
) -> Figure:
    """A ranking metric at several cut-offs k, for the model and its baselines."""
    return lines(ks, curves, "k", metric, title)


def bars(values: Mapping[str, float], metric: str, title: str) -> Figure:
    """One metric for several models as horizontal bars (e.g. catalogue coverage)."""
    fig, ax = plt.subplots(figsize=(6, 0.5 + 0.4 * len(values)))
    names = list(values)
    ax.barh(
        names, [values[n] for n in names], color=["C0" if n == "shopml" else "grey" for n in names]
    )
    ax.set(xlabel=metric, title=title)
    ax.invert_yaxis()
    fig.tight_layout()
    return fig


def forecast_vs_actual(
    weeks: Sequence[str],
    series: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
    title: str,
) -> Figure:
    """Small multiples: actual weekly units against P50 with the [P10, P90] band, per item."""
    n = len(series)
    cols = 3
    rows = max(1, int(np.ceil(n / cols)))
    fig, axes = plt.subplots(rows, cols, figsize=(12, 2.8 * rows), squeeze=False)
    x = np.arange(len(weeks))
    for ax, (name, (actual, p10, p50, p90)) in zip(axes.ravel(), series.items(), strict=False):
        ax.fill_between(x, p10, p90, alpha=0.25, label="P10-P90")
        ax.plot(x, p50, label="P50")
        ax.plot(x, actual, marker=".", c="k", lw=1, label="actual")
        ax.set_title(name, fontsize=9)
        ax.set_xticks(
            x[:: max(1, len(x) // 4)], [weeks[i] for i in x[:: max(1, len(x) // 4)]], fontsize=7
        )
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def by_horizon(
    horizons: Sequence[int], curves: Mapping[str, Sequence[float]], metric: str, title: str
) -> Figure:
    """Error (or coverage) by forecast horizon in weeks."""
    return lines(horizons, curves, "weeks ahead", metric, title)
