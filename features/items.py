"""Item features as of a date: velocity, price and its change, popularity, repeat purchases.

Pure function of (orders, as_of): only order lines strictly before ``as_of`` are read.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.purchases import Purchases
from features.schema import CATEGORY, ITEM_ID, ORDERED_AT, QUANTITY, UNIT_PRICE

WINDOWS_DAYS = (30, 90, 365)
PRICE_RECENT_DAYS = 30
BLOCK = 1 << 20  # rows per block of the block-wise scans


def before(
    orders: pd.DataFrame, as_of: pd.Timestamp, *, ordered_at: str = ORDERED_AT
) -> pd.DataFrame:
    """Order lines strictly before ``as_of``."""
    return orders[orders[ordered_at].to_numpy() < np.datetime64(pd.Timestamp(as_of))]


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


def item_features_of(purchases: Purchases, *, items: pd.DataFrame | None = None) -> pd.DataFrame:
    """:func:`item_features` of the orders and ``as_of`` that ``purchases`` were built from."""
    p = purchases
    orders = p.orders
    sold = np.bincount(p.item, minlength=p.n_items) > 0
    compact = (np.cumsum(sold) - 1).astype(np.int32)  # item code -> row of the result
    n = int(sold.sum())
    lines = _line_stats(p, compact, n)  # line-level temporaries die in here
    pairs = _ItemPairs.build(p, compact, days_before(p.as_of, p.o_when))
    out: dict[str, np.ndarray] = {}
    for w in WINDOWS_DAYS:
        out[f"units_{w}d"] = lines[f"units_{w}d"]
        out[f"orders_{w}d"] = np.bincount(pairs.order_item[pairs.order_age < w], minlength=n)
        out[f"buyers_{w}d"] = np.bincount(pairs.buyer_item[pairs.buyer_last < w], minlength=n)
    out["units_total"] = lines["units_total"]
    out["buyers_total"] = np.bincount(pairs.buyer_item, minlength=n)
    for name in ("first_sold_days", "last_sold_days", "price_last", "price_mean", "price_change"):
        out[name] = lines[name]
    buyers_90 = out["buyers_90d"].astype(float)
    out["popularity_rank"] = (
        pd.Series(buyers_90 + out["buyers_total"] * 1e-9).rank(ascending=False, method="first")
    ).to_numpy()
    out["repeat_rate"], out["repeat_interval_days"] = pairs.repeat_stats(n)
    del pairs

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


def _line_stats(p: Purchases, compact: np.ndarray, n: int) -> dict[str, np.ndarray]:
    """Units over windows, first and last sale, prices: per item row, from the lines."""
    codes = compact.astype(np.intp)[p.item]  # the index type: no cast in bincount or ufunc.at
    age = days_before(p.as_of, p.orders[ORDERED_AT].to_numpy(), p.buy)
    qty = p.line(QUANTITY)
    out: dict[str, np.ndarray] = {}
    for w in WINDOWS_DAYS:
        out[f"units_{w}d"] = _sums_below(codes, qty, age, w, n)
    units_total = np.bincount(codes, qty, minlength=n)
    out["units_total"] = units_total
    first_sold = np.full(n, -np.inf)
    np.maximum.at(first_sold, codes, age)
    last_sold = np.full(n, np.inf)
    np.minimum.at(last_sold, codes, age)
    out["first_sold_days"] = first_sold
    out["last_sold_days"] = last_sold
    value = p.line(UNIT_PRICE)
    last_price = _last_value(codes, age, last_sold, value, n)
    value *= qty  # the unit prices become line values in place: one array fewer
    price_mean = np.bincount(codes, value, minlength=n) / np.maximum(units_total, 1e-9)
    recent = age < PRICE_RECENT_DAYS
    recent_units = np.bincount(codes[recent], qty[recent], minlength=n)
    recent_price = np.bincount(codes[recent], value[recent], minlength=n)
    del value, qty
    with np.errstate(invalid="ignore", divide="ignore"):
        out["price_last"] = np.where(recent_units > 0, recent_price / recent_units, last_price)
        out["price_mean"] = price_mean
        out["price_change"] = out["price_last"] / price_mean - 1.0
    return out


def _sums_below(
    codes: np.ndarray, weights: np.ndarray, age: np.ndarray, below: float, n: int
) -> np.ndarray:
    """``np.bincount(codes[m], weights[m], minlength=n)`` for ``m = age < below``, by blocks.

    ``np.add.at`` adds row by row in order, as ``bincount`` does (the same bits), and a block's
    selection is all it copies.
    """
    out = np.zeros(n)
    for i in range(0, len(codes), BLOCK):
        m = age[i : i + BLOCK] < below
        np.add.at(out, codes[i : i + BLOCK][m], weights[i : i + BLOCK][m])
    return out


def _returned_units(p: Purchases, orders: pd.DataFrame) -> pd.Series:
    """Units returned before ``as_of`` per item id (positive)."""
    qty = orders[QUANTITY].to_numpy(dtype=np.float64)[p.ret]
    item = p.item_all[p.ret]
    returned = pd.Series(qty).groupby(item).sum().abs()
    returned.index = p.items[returned.index.to_numpy()]
    return returned


@dataclass(frozen=True)
class _ItemPairs:
    """Distinct (item, order) pairs and distinct (item, buyer) pairs, from the purchase chains.

    ``order_*``: one entry per item in an order (the order's age in days); ``buyer_*``: one entry
    per item and customer (the age of their latest order of it, their number of orders of it);
    ``chain_*``: the days between consecutive orders of an item by one customer.
    """

    order_item: np.ndarray
    order_age: np.ndarray
    buyer_item: np.ndarray
    buyer_last: np.ndarray
    buyer_orders: np.ndarray
    chain_item: np.ndarray
    chain_gap: np.ndarray

    @classmethod
    def build(cls, p: Purchases, compact: np.ndarray, order_age: np.ndarray) -> _ItemPairs:
        chains = p.chains
        item = compact[chains.item]
        age = order_age[chains.order]
        start, end = chains.pair_start, chains.pair_end
        same = ~chains.new_pair[1:]
        return cls(
            order_item=item,
            order_age=age,
            buyer_item=item[start],
            buyer_last=age[end],
            buyer_orders=end - start + 1,
            chain_item=item[1:][same],
            chain_gap=(age[:-1] - age[1:])[same],
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


def _last_value(
    group: np.ndarray, age: np.ndarray, newest: np.ndarray, value: np.ndarray, n: int
) -> np.ndarray:
    """``value`` of the most recent row (age == ``newest`` of its group; the last such row).

    The rows are found a block at a time: no temporary as long as the rows.
    """
    rows = np.concatenate(
        [
            np.flatnonzero(age[i : i + BLOCK] == newest[group[i : i + BLOCK]]) + i
            for i in range(0, max(len(age), 1), BLOCK)
        ]
    )
    last = np.full(n, -1)
    np.maximum.at(last, group[rows], rows)
    out = np.full(n, np.nan)
    has = last >= 0
    out[has] = value[last[has]]
    return out
