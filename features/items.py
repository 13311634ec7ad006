"""Item features as of a date: velocity, price and its change, popularity, repeat purchases.

Pure function of (orders, as_of): only order lines strictly before ``as_of`` are read.
"""

from __future__ import annotations

from dataclasses import dataclass

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

    pairs = _ItemPairs.build(codes, cust, order, age)
    out: dict[str, np.ndarray] = {}
    for w in WINDOWS_DAYS:
        m = age < w
        out[f"units_{w}d"] = np.bincount(codes[m], qty[m], minlength=n)
        out[f"orders_{w}d"] = np.bincount(pairs.order_item[pairs.order_age < w], minlength=n)
        out[f"buyers_{w}d"] = np.bincount(pairs.buyer_item[pairs.buyer_last < w], minlength=n)
    out["units_total"] = np.bincount(codes, qty, minlength=n)
    out["buyers_total"] = np.bincount(pairs.buyer_item, minlength=n)
    out["first_sold_days"] = _reduce(np.maximum, codes, age, n, -np.inf)
    out["last_sold_days"] = _reduce(np.minimum, codes, age, n, np.inf)

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
    out["repeat_rate"], out["repeat_interval_days"] = pairs.repeat_stats(n)

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


def _reduce(
    ufunc: np.ufunc, group: np.ndarray, value: np.ndarray, n: int, empty: float
) -> np.ndarray:
    """``ufunc``-reduction (max/min) of ``value`` per ``group`` code; ``empty`` for no rows."""
    out = np.full(n, empty)
    if len(group):
        order = np.argsort(group, kind="stable")
        g = group[order]
        starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
        out[g[starts]] = ufunc.reduceat(value[order], starts)
    return out


@dataclass(frozen=True)
class _ItemPairs:
    """Distinct (item, order) pairs and distinct (item, buyer) pairs, computed once by sorting.

    ``order_*``: one entry per item in an order (its age in days); ``buyer_*``: one entry per item
    and customer (the age of their latest order of it); ``chain_*``: the (item, order) pairs
    sorted by item, customer and time, for repeat statistics.
    """

    order_item: np.ndarray
    order_age: np.ndarray
    buyer_item: np.ndarray
    buyer_last: np.ndarray
    buyer_orders: np.ndarray
    chain_item: np.ndarray
    chain_gap: np.ndarray

    @classmethod
    def build(
        cls, item: np.ndarray, cust: np.ndarray, order: np.ndarray, age: np.ndarray
    ) -> _ItemPairs:
        key = item.astype(np.int64) * (int(order.max(initial=0)) + 1) + order
        idx = np.argsort(key, kind="stable")
        k = key[idx]
        first = idx[np.r_[True, k[1:] != k[:-1]]] if len(k) else idx
        p_item, p_cust, p_age = item[first], cust[first], age[first]
        # sort the pairs by (item, customer), oldest order first
        chain = np.lexsort((-p_age, p_cust, p_item))
        c_item, c_cust, c_age = p_item[chain], p_cust[chain], p_age[chain]
        new = np.r_[True, (c_item[1:] != c_item[:-1]) | (c_cust[1:] != c_cust[:-1])]
        if not len(c_item):
            new = np.zeros(0, dtype=bool)
        starts = np.flatnonzero(new)
        ends = np.r_[starts[1:], len(c_item)] - 1
        same = ~new[1:]
        return cls(
            order_item=p_item,
            order_age=p_age,
            buyer_item=c_item[starts],
            buyer_last=c_age[ends],
            buyer_orders=ends - starts + 1,
            chain_item=c_item[1:][same],
            chain_gap=(c_age[:-1] - c_age[1:])[same],
        )

    def repeat_stats(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Per item: share of buyers with >= 2 orders of it; median days between re-buys."""
        buyers = np.bincount(self.buyer_item, minlength=n)
        repeaters = np.bincount(self.buyer_item, self.buyer_orders >= 2, minlength=n)
        with np.errstate(invalid="ignore", divide="ignore"):
            rate = np.where(buyers > 0, repeaters / np.maximum(buyers, 1), 0.0)
        interval = np.full(n, np.nan)
        if len(self.chain_gap):
            med = pd.Series(self.chain_gap).groupby(self.chain_item).median()
            interval[med.index.to_numpy()] = med.to_numpy()
        return rate, interval


def _last_value(group: np.ndarray, age: np.ndarray, value: np.ndarray, n: int) -> np.ndarray:
    """``value`` of the most recent row (smallest age) of each group."""
    out = np.full(n, np.nan)
    order = np.lexsort((-age, group))  # within each group, oldest first; last row = newest
    out[group[order]] = value[order]
    return out
