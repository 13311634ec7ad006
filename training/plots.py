"""Plots a person would rather look at than a table, logged with every training run.

Each function takes plain arrays and returns a matplotlib Figure (Agg backend, nothing shown).
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, PercentFormatter
from sklearn.calibration import calibration_curve
from sklearn.metrics import roc_curve


def roc(y: np.ndarray, scores: Mapping[str, np.ndarray], title: str) -> Figure:
    """ROC curves of a model and its baselines on one backtest."""
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for name, s in scores.items():
        fpr, tpr, _ = roc_curve(y, s)
        auc = np.trapezoid(tpr, fpr)
        ax.plot(fpr, tpr, label=f"{name} (AUC {auc:.3f})", **_style(name))
    ax.plot([0, 1], [0, 1], ls=":", c="grey", label="random (AUC 0.500)")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title=_wrap(title, fig))
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return fig


def gains(
    y: np.ndarray, scores: Mapping[str, np.ndarray], title: str, positives: str = "positives"
) -> Figure:
    """Cumulative gains: share of ``positives`` (e.g. "churners") found when
    contacting the top x% by score."""
    fig, ax = plt.subplots(figsize=(5.5, 5))
    share = np.arange(1, len(y) + 1) / len(y)
    for name, s in scores.items():
        found = np.cumsum(y[np.argsort(-s, kind="stable")]) / max(y.sum(), 1)
        lift10 = found[max(int(0.1 * len(y)) - 1, 0)] / 0.1
        ax.plot(share, found, label=f"{name} (lift@10% {lift10:.2f})", **_style(name))
    ax.plot([0, 1], [0, 1], ls=":", c="grey", label="random")
    ax.set(
        xlabel="share of customers contacted (highest scores first)",
        ylabel=f"share of {positives} found",
        title=_wrap(title, fig),
    )
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def calibration(
    y: np.ndarray, prob: np.ndarray, title: str, bins: int = 10, outcome: str = "positive"
) -> Figure:
    """Reliability curve: observed rate of ``outcome`` (e.g. "churn") against the predicted
    probability, with the histogram of predicted probabilities below."""
    fig, (ax, hist) = plt.subplots(
        2, 1, figsize=(5.5, 6), gridspec_kw={"height_ratios": [3, 1]}, sharex=True
    )
    observed, predicted = calibration_curve(y, prob, n_bins=bins, strategy="quantile")
    ax.plot(predicted, observed, marker="o", label=f"shopml ({bins} equal-size bins)")
    ax.plot([0, 1], [0, 1], ls=":", c="grey", label="perfectly calibrated")
    ax.set(ylabel=f"observed {outcome} rate", xlim=(0, 1), ylim=(0, 1))
    ax.set_title(_wrap(title, fig))
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    hist.hist(prob, bins=30, range=(0, 1), color="grey")
    hist.set(xlabel=f"predicted probability of {outcome}", ylabel="customers")
    fig.tight_layout()
    return fig


def _wrap(title: str, fig: Figure) -> str:
    """``title`` broken into lines that fit the figure's width (long titles were cut off at both
    edges: "Cumulative gains: repurchase within 30 days (2024-12-02..2025-01-01)")."""
    return textwrap.fill(title, width=max(20, int(fig.get_figwidth() * 8.5)))


def _style(name: str) -> dict[str, Any]:
    """The served model (``shopml``) thick and drawn over the baselines."""
    return {"lw": 2.5, "zorder": 3} if name.startswith("shopml") else {"lw": 1, "zorder": 2}


def _integer_ticks(ax: Axes, x: Sequence[int]) -> None:
    """Ticks at the x values themselves (k = 1, 3, 5, 10, 20; weeks 1..12), never 2.5 or 7.5."""
    values = sorted({int(v) for v in x})
    if len(values) <= 20:
        ax.set_xticks(values)
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def lines(
    x: Sequence[int],
    curves: Mapping[str, Sequence[float]],
    xlabel: str,
    ylabel: str,
    title: str,
    reference: Mapping[str, float] | None = None,
) -> Figure:
    """One line per model over ``x`` (the ``shopml`` line thicker and on top); ``reference``
    values (a target, a nominal level) as dashed horizontal lines without markers."""
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for name, values in curves.items():
        ax.plot(x, values, marker="o", label=name, **_style(name))
    for name, value in (reference or {}).items():
        ax.axhline(value, ls="--", c="grey", lw=1, label=name)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=_wrap(title, fig))
    _integer_ticks(ax, x)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def metric_vs_k(
    ks: Sequence[int], curves: Mapping[str, Sequence[float]], metric: str, title: str
) -> Figure:
    """A ranking metric at several cut-offs k, for the model and its baselines."""
    return lines(ks, curves, "k", metric, title)


def share_label(value: float) -> str:
    """A share in percent, with the digits a small one needs (10 of 3,600 items: "0.28%", not
    "0%", which reads as none)."""
    if value == 0 or abs(value) >= 0.1:
        return f"{value:.0%}"
    return f"{100 * value:.2g}%"


def bars(values: Mapping[str, float], metric: str, title: str, share: bool = False) -> Figure:
    """One metric for several models as horizontal bars, each labelled with its value
    (``share``: a fraction, drawn on 0..1 and labelled in percent)."""
    fig, ax = plt.subplots(figsize=(6, 1.2 + 0.4 * len(values)))
    names = list(values)
    heights = [values[n] for n in names]
    bars_ = ax.barh(
        names, heights, color=["C0" if n.startswith("shopml") else "grey" for n in names]
    )
    ax.bar_label(
        bars_, labels=[share_label(v) if share else f"{v:.3g}" for v in heights], padding=3
    )
    if share:
        ax.set_xlim(0, 1.12)
        ax.xaxis.set_major_formatter(PercentFormatter(1.0))
    else:
        ax.set_xlim(0, max([*heights, 0.0]) * 1.15 or 1.0)
    ax.set(xlabel=metric, title=_wrap(title, fig))
    ax.invert_yaxis()
    fig.tight_layout()
    return fig


def forecast_vs_actual(
    weeks: Sequence[str],
    series: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]],
    title: str,
) -> Figure:
    """Small multiples: actual weekly units against P50 with the [P10, P90] band, per item
    (``series`` keys are the panel titles, e.g. ``"I00188 Deluxe Knife"``)."""
    n = len(series)
    cols = 3
    rows = max(1, int(np.ceil(n / cols)))
    fig, axes = plt.subplots(rows, cols, figsize=(12, 1.0 + 2.8 * rows), squeeze=False)
    x = np.arange(len(weeks))
    step = max(1, len(x) // 4)
    for k, (ax, (name, (actual, p10, p50, p90))) in enumerate(
        zip(axes.ravel(), series.items(), strict=False)
    ):
        ax.fill_between(x, p10, p90, alpha=0.25, label="forecast P10-P90")
        ax.plot(x, p50, label="forecast P50")
        ax.plot(x, actual, marker=".", c="k", lw=1, label="actual")
        ax.set_title(name if len(name) <= 40 else name[:39] + "…", fontsize=9)
        ax.set_xticks(x[::step], [weeks[i] for i in x[::step]], fontsize=7)
        ax.set_ylim(bottom=0)
        if k % cols == 0:
            ax.set_ylabel("units per week")
        if k >= n - cols:  # the lowest panel of its column
            ax.set_xlabel("week ending", fontsize=8)
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    axes[0, 0].legend(fontsize=7, loc="upper left")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def by_horizon(
    horizons: Sequence[int],
    curves: Mapping[str, Sequence[float]],
    metric: str,
    title: str,
    reference: Mapping[str, float] | None = None,
) -> Figure:
    """Error (or coverage) by forecast horizon in weeks; ``reference``: e.g. the nominal level."""
    return lines(horizons, curves, "weeks ahead", metric, title, reference)
