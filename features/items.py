"""Item features as of a date: velocity, price and its change, popularity, repeat purchases.

Pure function of (orders, as_of): only order lines strictly before ``as_of`` are read.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.schema import (
    CATEGORY,
    CUSTOMER_ID,
    IS_RETURN,
    ITEM_ID,
    ORDER_ID,
    ORDERED_AT,
    QUANTITY,
    UNIT_PRICE,
)

WINDOWS_DAYS = (30, 90, 365)
PRICE_RECENT_DAYS = 30


def before(
    orders: pd.DataFrame, as_of: pd.Timestamp, *, ordered_at: str = ORDERED_AT
) -> pd.DataFrame:
    """Order lines strictly before ``as_of``."""
    return orders[orders[ordered_at].to_numpy() < np.datetime64(pd.Timestamp(as_of))]


def days_before(as_of: pd.Timestamp, times: pd.Series) -> np.ndarray:
    """Days (float) from each timestamp to ``as_of``."""
    delta = np.datetime64(as_of, "ns") - times.to_numpy(dtype="datetime64[ns]")
    return np.asarray(delta.astype("timedelta64[ns]").astype(np.int64) / 86_400e9)


def item_features(
    orders: pd.DataFrame,
    as_of: str | pd.Timestamp,
    *,
    items: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """One row per item sold before ``as_of`` (index ``item_id``).

    Columns: ``units_{w}d``, ``orders_{w}d``, ``buyers_{w}d`` for w in 30/90/365 days;
    ``units_total``, ``buyers_total``, ``first_sold_days`` / ``last_sold_days`` (days before
    as_of), ``price_last`` (mean unit price over the last 30 days of sales, else the last price
    seen), ``price_mean``, ``price_change`` (price_last / price_mean - 1), ``popularity_rank``
    (1 = most buyers in the last 90 days), ``repeat_rate`` (share of buyers with >= 2 orders of
    the item), ``repeat_interval_days`` (median days between a buyer's orders of it; NaN when
    never re-bought), ``return_rate`` (returned / bought units) and ``category`` when an items
    table is given.
    """
    as_of = pd.Timestamp(as_of)
    past = before(orders, as_of)
    bought = past[~past[IS_RETURN].to_numpy()]
    item = bought[ITEM_ID].cat.remove_unused_categories()
    codes = item.cat.codes.to_numpy()
    n = len(item.cat.categories)
    age = days_before(as_of, bought[ORDERED_AT])
    qty = bought[QUANTITY].to_numpy()
    price = bought[UNIT_PRICE].to_numpy()
    cust = bought[CUSTOMER_ID].cat.codes.to_numpy().astype(np.int64)
    order = bought[ORDER_ID].cat.codes.to_numpy().astype(np.int64)

    out: dict[str, np.ndarray] = {}
    for w in WINDOWS_DAYS:
        m = age < w
        out[f"units_{w}d"] = np.bincount(codes[m], qty[m], minlength=n)
        out[f"orders_{w}d"] = _distinct_count(codes[m], order[m], n)
        out[f"buyers_{w}d"] = _distinct_count(codes[m], cust[m], n)
    out["units_total"] = np.bincount(codes, qty, minlength=n)
    out["buyers_total"] = _distinct_count(codes, cust, n)
    first = np.full(n, -np.inf)
    np.maximum.at(first, codes, age)
    last = np.full(n, np.inf)
    np.minimum.at(last, codes, age)
    out["first_sold_days"], out["last_sold_days"] = first, last

    price_mean = np.bincount(codes, price * qty, minlength=n) / np.maximum(out["units_total"], 1e-9)
    recent = age < PRICE_RECENT_DAYS
    recent_units = np.bincount(codes[recent], qty[recent], minlength=n)
    recent_price = np.bincount(codes[recent], (price * qty)[recent], minlength=n)
    last_price = _last_value(codes, age, price, n)
    with np.errstate(invalid="ignore", divide="ignore"):
        out["price_last"] = np.where(recent_units > 0, recent_price / recent_units, last_price)
        out["price_mean"] = price_mean
        out["price_change"] = out["price_last"] / price_mean - 1.0
    buyers_90 = out["buyers_90d"].astype(float)
    out["popularity_rank"] = (
        pd.Series(buyers_90 + out["buyers_total"] * 1e-9).rank(ascending=False, method="first")
    ).to_numpy()
    rate, interval = _repeat_stats(codes, cust, order, age, n)
    out["repeat_rate"], out["repeat_interval_days"] = rate, interval

    returns = past[past[IS_RETURN].to_numpy()]
    returned = returns.groupby(ITEM_ID, observed=True)[QUANTITY].sum().abs()
    frame = pd.DataFrame(out, index=pd.Index(item.cat.categories, name=ITEM_ID))
    frame["return_rate"] = (
        returned.reindex(frame.index).fillna(0.0) / frame["units_total"].clip(lower=1e-9)
    ).clip(upper=1.0)
    if items is not None and CATEGORY in items.columns:
        cats = items.set_index(items[ITEM_ID].astype(str))[CATEGORY]
        frame[CATEGORY] = cats.reindex(frame.index.astype(str)).astype("string").to_numpy()
    return frame


def _distinct_count(group: np.ndarray, value: np.ndarray, n: int) -> np.ndarray:
    """Number of distinct ``value`` per ``group`` code (0..n-1)."""
    if len(group) == 0:
        return np.zeros(n, dtype=np.int64)
    pairs = np.unique(group.astype(np.int64) * (int(value.max()) + 1) + value)
    return np.bincount(pairs // (int(value.max()) + 1), minlength=n)


def _last_value(group: np.ndarray, age: np.ndarray, value: np.ndarray, n: int) -> np.ndarray:
    """``value`` of the most recent row (smallest age) of each group."""
    out = np.full(n, np.nan)
    order = np.lexsort((-age, group))  # within each group, oldest first; last row = newest
    out[group[order]] = value[order]
    return out


def _repeat_stats(
    item: np.ndarray, cust: np.ndarray, order: np.ndarray, age: np.ndarray, n: int
) -> tuple[np.ndarray, np.ndarray]:
    """Per item: share of buyers with >= 2 distinct orders of it; median re-buy interval (days)."""
    frame = pd.DataFrame({"i": item, "c": cust, "o": order, "age": age})
    per_order = frame.groupby(["i", "c", "o"], sort=True)["age"].max().reset_index()
    orders_per_buyer = per_order.groupby(["i", "c"], sort=False).size()
    buyers = np.bincount(orders_per_buyer.index.get_level_values(0), minlength=n)
    repeaters = np.bincount(
        orders_per_buyer.index.get_level_values(0), (orders_per_buyer >= 2).to_numpy(), minlength=n
    )
    per_order = per_order.sort_values(["i", "c", "age"], ascending=[True, True, False])
    same = (per_order["i"].diff() == 0) & (per_order["c"].diff() == 0)
    gaps = (-per_order["age"].diff())[same.to_numpy()]
    interval = np.full(n, np.nan)
    if len(gaps):
        med = gaps.groupby(per_order["i"][same.to_numpy()]).median()
        interval[med.index.to_numpy()] = med.to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        rate = np.where(buyers > 0, repeaters / np.maximum(buyers, 1), 0.0)
    return rate, interval
