"""Labels strictly after ``as_of``: churn, repurchase and future spend over a horizon.

A label window is ``[as_of, as_of + horizon_days)``; only purchase lines (not returns) count,
except in :func:`future_spend`, which is net of the returns made in the window.
The population is passed in (usually the index of :func:`features.users.user_features`), so
labels and features line up row for row.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.purchases import as_timestamp
from features.schema import CUSTOMER_ID, IS_RETURN, ORDERED_AT, QUANTITY, UNIT_PRICE


def _window_purchases(
    orders: pd.DataFrame, as_of: object, horizon_days: int, *, returns: bool = False
) -> tuple[pd.DataFrame, pd.Timestamp]:
    if horizon_days <= 0:
        raise ValueError(f"horizon_days must be positive, got {horizon_days}")
    start = as_timestamp(as_of)
    end = start + pd.Timedelta(days=horizon_days)
    when = orders[ORDERED_AT]
    keep = (when >= start) & (when < end)
    if IS_RETURN in orders and not returns:
        keep &= ~orders[IS_RETURN].astype(bool)
    return orders.loc[keep], end


def label_window_covered(orders: pd.DataFrame, as_of: object, horizon_days: int) -> bool:
    """True when the data reaches the end of the label window (its last day has orders after)."""
    end = as_timestamp(as_of) + pd.Timedelta(days=horizon_days)
    return bool(orders[ORDERED_AT].max() >= end - pd.Timedelta(days=1))


def purchase_counts(
    orders: pd.DataFrame, as_of: object, horizon_days: int, population: pd.Index
) -> pd.Series:
    """Number of purchase lines per customer of ``population`` in the label window."""
    window, _ = _window_purchases(orders, as_of, horizon_days)
    ids = window[CUSTOMER_ID].astype(str).to_numpy()
    counts = pd.Series(ids).value_counts()
    out = counts.reindex(pd.Index(population).astype(str), fill_value=0)
    out.index = population
    return out.astype(np.int64)


def churn_labels(
    orders: pd.DataFrame, as_of: object, population: pd.Index, horizon_days: int = 90
) -> pd.Series:
    """1 when a customer makes no purchase in ``[as_of, as_of + horizon_days)``, else 0."""
    counts = purchase_counts(orders, as_of, horizon_days, population)
    return (counts == 0).astype(np.int8).rename("churn")


def repurchase_labels(
    orders: pd.DataFrame, as_of: object, population: pd.Index, horizon_days: int = 30
) -> pd.Series:
    """1 when a customer makes >= 1 purchase in ``[as_of, as_of + horizon_days)``, else 0."""
    counts = purchase_counts(orders, as_of, horizon_days, population)
    return (counts > 0).astype(np.int8).rename("repurchase")


def future_spend(
    orders: pd.DataFrame, as_of: object, population: pd.Index, horizon_days: int = 365
) -> pd.Series:
    """Net spend per customer in the label window: purchased value (quantity x unit price) minus
    the value of the returns made in it, at least 0. A customer who buys and returns everything
    is worth nothing to the shop, however large the order."""
    window, _ = _window_purchases(orders, as_of, horizon_days, returns=True)
    qty = window[QUANTITY].to_numpy(dtype=np.float64)
    if IS_RETURN in window:  # a return line's quantity counts against the spend, whatever its sign
        qty = np.where(window[IS_RETURN].astype(bool).to_numpy(), -np.abs(qty), qty)
    rev = qty * window[UNIT_PRICE].to_numpy(np.float64)
    spend = pd.Series(rev).groupby(window[CUSTOMER_ID].astype(str).to_numpy()).sum().clip(lower=0)
    out = spend.reindex(pd.Index(population).astype(str), fill_value=0.0)
    out.index = population
    return out.astype(np.float64).rename("spend")
