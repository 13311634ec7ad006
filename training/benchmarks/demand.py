"""Protocol D of ``../shared/BENCHMARKS.md``: weekly demand forecasts on Online Retail.

Weekly units per StockCode (cleaned purchases), weeks ending Sunday, first full week ending
2010-12-12, missing weeks 0. Series: items with sales in >= 10 training weeks. Origins (the week
that ends the training data): 2011-08-28 (h = 12), 2011-07-31 (h = 12), 2011-10-02 (h = 8).

Run with ``python -m training.benchmarks.demand``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features.demand import WeeklyDemand, active_items, calendar_features, weekly_demand
from features.schema import purchases
from training.benchmarks import write_results

log = logging.getLogger(__name__)

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "online_retail"
ORIGINS: dict[str, int] = {"2011-08-28": 12, "2011-07-31": 12, "2011-10-02": 8}
MAIN_ORIGIN = "2011-08-28"
QUANTILES = (0.1, 0.5, 0.9)
MIN_WEEKS = 10
NUM_THREADS = 2

#: statsforecast rows quoted from BENCHMARKS.md (statsforecast needs pandas < 3; not recomputed).
QUOTED: dict[str, dict[str, dict[str, float]]] = {
    "D@2011-08-28": {
        "statsforecast-autoets": {
            "mase": 1.591, "rmsse": 1.312, "wape": 0.799, "bias": -0.109,
            "pinball@0.1": 6.00, "pinball@0.5": 19.67, "pinball@0.9": 16.94,
            "coverage80": 0.84, "fit_s": 4.0,
        },
        "statsforecast-adida": {
            "mase": 1.544, "rmsse": 1.288, "wape": 0.751, "bias": -0.198, "fit_s": 0.3,
        },
        "statsforecast-tsb-0.1-0.1": {
            "mase": 1.565, "rmsse": 1.298, "wape": 0.851, "bias": -0.106, "fit_s": 0.3,
        },
    },
    "D-mean": {
        "statsforecast-adida": {"mase": 1.432, "wape": 0.740},
        "statsforecast-autoets": {"mase": 1.465, "wape": 0.784},
    },
}  # fmt: skip


# --------------------------------------------------------------------------------- the protocol
def origin_as_of(origin: str | pd.Timestamp) -> pd.Timestamp:
    """``as_of`` for an origin week: the day after its Sunday (the origin week is training)."""
    return pd.Timestamp(origin) + pd.Timedelta(days=1)


def actuals(orders: pd.DataFrame, items: pd.Index, origin: str, horizon: int) -> np.ndarray:
    """Units of ``items`` in the ``horizon`` weeks after ``origin`` (0 where nothing was sold)."""
    start = pd.Timestamp(origin) + pd.Timedelta(days=7)
    end = pd.Timestamp(origin) + pd.Timedelta(days=7 * horizon)
    wd = weekly_demand(orders, end + pd.Timedelta(days=1), start=start, end=end)
    frame = wd.frame().reindex(items).fillna(0.0)
    return frame.to_numpy()


# ------------------------------------------------------------------------------------- metrics
def point_metrics(history: np.ndarray, y: np.ndarray, f: np.ndarray) -> dict[str, float]:
    """MASE, RMSSE (naive in-sample scales; series with scale 0 skipped), WAPE and bias."""
    diff = np.diff(history, axis=1)
    mae_scale = np.abs(diff).mean(axis=1)
    mse_scale = (diff**2).mean(axis=1)
    err = f - y
    ok = mae_scale > 0
    mase = float(np.mean(np.abs(err[ok]).mean(axis=1) / mae_scale[ok]))
    rmsse = float(np.mean(np.sqrt((err[ok] ** 2).mean(axis=1) / mse_scale[ok])))
    total = float(y.sum())
    return {
        "mase": mase,
        "rmsse": rmsse,
        "wape": float(np.abs(err).sum() / total),
        "bias": float(err.sum() / total),
    }


def pinball(y: np.ndarray, f: np.ndarray, q: float) -> float:
    """Mean pinball loss of quantile ``q`` over all series and weeks (in units)."""
    d = y - f
    return float(np.mean(np.maximum(q * d, (q - 1) * d)))


def quantile_metrics(y: np.ndarray, quantiles: np.ndarray) -> dict[str, float]:
    """Pinball loss at 0.1/0.5/0.9 and the coverage of [P10, P90]; ``quantiles`` is (3, n, h)."""
    out = {f"pinball@{q}": pinball(y, quantiles[k], q) for k, q in enumerate(QUANTILES)}
    out["coverage80"] = float(np.mean((y >= quantiles[0]) & (y <= quantiles[2])))
    return out


# ----------------------------------------------------------------------------------- references
def ref_naive(hist: np.ndarray, h: int) -> np.ndarray:
    return np.repeat(hist[:, -1:], h, axis=1)


def ref_mean(hist: np.ndarray, h: int, window: int) -> np.ndarray:
    return np.repeat(hist[:, -window:].mean(axis=1, keepdims=True), h, axis=1)


def ref_empirical(hist: np.ndarray, h: int, window: int = 12) -> np.ndarray:
    """Empirical P10/P50/P90 of the last ``window`` weeks, shape (3, n, h)."""
    q = np.quantile(hist[:, -window:], QUANTILES, axis=1)
    return np.repeat(q[:, :, None], h, axis=2)


def lgb_reference_frame(
    wd: WeeklyDemand, rows: np.ndarray, t: int, horizon: int
) -> tuple[pd.DataFrame, np.ndarray]:
    """Direct features at origin index ``t`` (lags 1-4, 8, 12, rolling 4/12, week, price, h)."""
    u = wd.units[rows]
    base = {
        **{f"lag{k}": u[:, t - k + 1] for k in (1, 2, 3, 4, 8, 12)},
        "roll4": u[:, t - 3 : t + 1].mean(axis=1),
        "roll12": u[:, t - 11 : t + 1].mean(axis=1),
        "price": wd.price[rows, t],
    }
    weeks = wd.weeks[t] + pd.to_timedelta(7 * np.arange(1, horizon + 1), unit="D")
    woy = calendar_features(pd.DatetimeIndex(weeks))["week_of_year"].to_numpy()
    parts = []
    for k in range(horizon):
        part = pd.DataFrame(base)
        part["h"] = k + 1
        part["week_of_year"] = woy[k]
        parts.append(part)
    frame = pd.concat(parts, ignore_index=True)
    target_t = t + np.arange(1, horizon + 1)
    return frame, target_t


def ref_lightgbm(
    wd: WeeklyDemand, rows: np.ndarray, horizon: int, objectives: list[dict[str, Any]]
) -> list[np.ndarray]:
    """Global direct LightGBM references (one model over h = 1..horizon); (n, h) per objective."""
    import lightgbm as lgb

    last = len(wd.weeks) - 1
    xs, ys = [], []
    for t in range(11, last):
        frame, target_t = lgb_reference_frame(wd, rows, t, horizon)
        ok = np.repeat(target_t <= last, len(rows))
        y = wd.units[rows][:, np.minimum(target_t, last)].T.reshape(-1)
        xs.append(frame[ok])
        ys.append(y[ok])
    x, y = pd.concat(xs, ignore_index=True), np.concatenate(ys)
    xt, _ = lgb_reference_frame(wd, rows, last, horizon)
    out = []
    for params in objectives:
        full = {"num_threads": NUM_THREADS, "verbose": -1, "seed": 0, **params}
        booster = lgb.train(full, lgb.Dataset(x, y), num_boost_round=200)
        pred = booster.predict(xt).reshape(horizon, len(rows)).T
        out.append(np.maximum(pred, 0.0))
    return out
