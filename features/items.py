"""Item features as of a date: velocity, price and its change, popularity, repeat purchases.

Pure function of (orders, as_of): only order lines strictly before ``as_of`` are read.
"""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pandas as pd

from features.arrays import add_at, blocks, code_counts
from features.purchases import Chains, Purchases, as_timestamp
from features.schema import CATEGORY, ITEM_ID, ORDERED_AT, QUANTITY, UNIT_PRICE

WINDOWS_DAYS = (30, 90, 365)
PRICE_RECENT_DAYS = 30


def before(
    orders: pd.DataFrame, as_of: pd.Timestamp, *, ordered_at: str = ORDERED_AT
) -> pd.DataFrame:
    """Order lines strictly before ``as_of``."""
    return orders[orders[ordered_at].to_numpy() < np.datetime64(as_timestamp(as_of))]


def days_before(
    as_of: pd.Timestamp, times: pd.Series | np.ndarray, rows: np.ndarray | None = None
) -> np.ndarray:
    """Days (float) from each timestamp (of the ``rows`` selected, default all) to ``as_of``."""
    selected = np.asarray(times) if rows is None else np.asarray(times)[rows]
    ns = np.array(selected, dtype="datetime64[ns]")  # a copy: the subtraction runs in place
    del selected
    delta = ns.view(np.int64)
    np.subtract(np.datetime64(as_of, "ns").astype(np.int64), delta, out=delta)
    return np.asarray(delta / 86_400e9)


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
    table is given. An order counts for its customer at the time of its earliest line.
    :func:`item_features_of` does the same from :class:`~features.purchases.Purchases`.
    """
    return item_features_of(Purchases.of(orders, as_of), items=items)


def item_features_of(
    purchases: Purchases,
    *,
    items: pd.DataFrame | None = None,
    line_stats: dict[str, np.ndarray] | None = None,
) -> pd.DataFrame:
    """:func:`item_features` of the orders and ``as_of`` that ``purchases`` were built from.

    Statistics are gathered per item code (every category) and the items sold are picked at the
    end; the lines are scanned a block at a time and the chains through masks per order, so no
    temporary is as long as the lines. ``line_stats``: :func:`line_statistics` of
    ``purchases`` when computed already (the pipeline does, beside weekly demand).
    """
    p = purchases
    orders = p.orders
    sold = code_counts(p.item, p.n_items) > 0
    stats = dict(line_statistics(p) if line_stats is None else line_stats)
    stats.update(_chain_stats(p, days_before(p.as_of, p.o_when)))
    out: dict[str, np.ndarray] = {}
    for w in WINDOWS_DAYS:
        for name in (f"units_{w}d", f"orders_{w}d", f"buyers_{w}d"):
            out[name] = stats[name][sold]
    for name in (
        "units_total",
        "buyers_total",
        "first_sold_days",
        "last_sold_days",
        "price_last",
        "price_mean",
        "price_change",
    ):
        out[name] = stats[name][sold]
    buyers_90 = out["buyers_90d"].astype(float)
    out["popularity_rank"] = (
        pd.Series(buyers_90 + out["buyers_total"] * 1e-9).rank(ascending=False, method="first")
    ).to_numpy()
    out["repeat_rate"] = stats["repeat_rate"][sold]
    out["repeat_interval_days"] = stats["repeat_interval_days"][sold]
    del stats

    index = pd.Index(p.items[sold], name=ITEM_ID)
    frame = pd.DataFrame(out, index=index)
    frame["return_rate"] = (
        _returned_units(p, orders).reindex(frame.index).fillna(0.0)
        / frame["units_total"].clip(lower=1e-9)
    ).clip(upper=1.0)
    if items is not None and CATEGORY in items.columns:
        cats = items.set_index(items[ITEM_ID].astype(str))[CATEGORY]
        frame[CATEGORY] = cats.reindex(frame.index.astype(str)).astype("string").to_numpy()
    return frame


def line_statistics(p: Purchases) -> dict[str, np.ndarray]:
    """Units over windows, first and last sale, prices: per item code, from the purchase lines.

    One scan of the table a block at a time (the ages of a block's lines, then its sums); the
    sums run line by line in table order, as ``np.bincount`` over all lines adds them.
    """
    k = p.n_items
    when = p.orders[ORDERED_AT].to_numpy()
    qty_all = p.orders[QUANTITY].to_numpy(dtype=np.float64)
    price_all = p.orders[UNIT_PRICE].to_numpy(dtype=np.float64)
    units = {w: np.zeros(k) for w in WINDOWS_DAYS}
    units_total, value_total, recent_units, recent_value = (np.zeros(k) for _ in range(4))
    first_sold, last_sold = np.full(k, -np.inf), np.full(k, np.inf)
    for rows in blocks(len(p.buy)):
        keep = p.buy[rows]
        item, qty = p.item_all[rows][keep], qty_all[rows][keep]
        age = days_before(p.as_of, when[rows][keep])
        for w in WINDOWS_DAYS:
            m = age < w
            add_at(units[w], item[m], qty[m])
        add_at(units_total, item, qty)
        np.maximum.at(first_sold, item, age)
        np.minimum.at(last_sold, item, age)
        value = price_all[rows][keep]
        value *= qty  # the line's value
        add_at(value_total, item, value)
        recent = age < PRICE_RECENT_DAYS
        add_at(recent_units, item[recent], qty[recent])
        add_at(recent_value, item[recent], value[recent])
    out = {f"units_{w}d": units[w] for w in WINDOWS_DAYS}
    out["units_total"] = units_total
    out["first_sold_days"] = first_sold
    out["last_sold_days"] = last_sold
    price_mean = value_total / np.maximum(units_total, 1e-9)
    last_price = _last_price(p, when, price_all, last_sold)
    with np.errstate(invalid="ignore", divide="ignore"):
        out["price_last"] = np.where(recent_units > 0, recent_value / recent_units, last_price)
        out["price_mean"] = price_mean
        out["price_change"] = out["price_last"] / price_mean - 1.0
    return out


def _last_price(
    p: Purchases, when: np.ndarray, price: np.ndarray, newest: np.ndarray
) -> np.ndarray:
    """Unit price of each item's most recent purchase line (age == ``newest``; the last such
    line in the table), a block at a time; NaN for items never bought."""
    last = np.full(p.n_items, -1)
    for rows in blocks(len(p.buy)):
        keep = np.flatnonzero(p.buy[rows])
        item = p.item_all[rows][keep]
        is_newest = days_before(p.as_of, when[rows][keep]) == newest[item]
        np.maximum.at(last, item[is_newest], keep[is_newest] + rows.start)
    out = np.full(p.n_items, np.nan)
    has = last >= 0
    out[has] = price[last[has]]
    return out


def _chain_stats(p: Purchases, order_age: np.ndarray) -> dict[str, np.ndarray]:
    """Per item code, from the purchase chains: orders and buyers over windows, buyers, the
    share of buyers with >= 2 orders of it, the median days between a buyer's orders of it.

    ``order_age``: days from each order to ``as_of``. Windows are masks per order (or per
    (customer, item) pair), so the per-triple temporaries are masks and item codes.
    """
    chains, k = p.chains, p.n_items
    start, end = chains.pair_start, chains.pair_end
    pair_item, newest_order = chains.item[start], chains.order[end]
    out: dict[str, np.ndarray] = {}
    for w in WINDOWS_DAYS:
        recent = order_age < w
        out[f"orders_{w}d"] = code_counts(chains.item[recent[chains.order]], k)
        out[f"buyers_{w}d"] = code_counts(pair_item[recent[newest_order]], k)
    buyers = code_counts(pair_item, k)
    repeaters = code_counts(pair_item[end > start], k)
    with np.errstate(invalid="ignore", divide="ignore"):
        out["repeat_rate"] = np.where(buyers > 0, repeaters / np.maximum(buyers, 1), 0.0)
    out["buyers_total"] = buyers
    out["repeat_interval_days"] = _median_gaps(chains, order_age, k)
    return out


def _median_gaps(chains: Chains, order_age: np.ndarray, k: int, parts: int = 4) -> np.ndarray:
    """Per item code: the median days between consecutive orders of it by one customer (NaN
    when never re-bought).

    The medians are taken over ``parts`` ranges of item codes with about as many gaps each, in
    turn (an item's gaps all fall in one range), which bounds the group-by's temporaries.
    """
    later = np.flatnonzero(~chains.new_pair[1:])  # triples k whose k + 1 is of the same pair
    gap = order_age[chains.order[later]]
    later += 1
    gap -= order_age[chains.order[later]]
    item = chains.item[later]
    del later
    interval = np.full(k, np.nan)
    per_item = np.cumsum(code_counts(item, k))
    bounds = np.r_[0, np.searchsorted(per_item, np.linspace(0, len(gap), parts + 1)[1:]) + 1]
    for low, high in pairwise(bounds):
        part = (item >= low) & (item < high)
        if part.any():
            med = pd.Series(gap[part]).groupby(item[part]).median()
            interval[med.index.to_numpy()] = med.to_numpy()
    return interval


def _returned_units(p: Purchases, orders: pd.DataFrame) -> pd.Series:
    """Units returned before ``as_of`` per item id (positive)."""
    qty = orders[QUANTITY].to_numpy(dtype=np.float64)[p.ret]
    item = p.item_all[p.ret]
    returned = pd.Series(qty).groupby(item).sum().abs()
    returned.index = p.items[returned.index.to_numpy()]
    return returned
