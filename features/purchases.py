"""Purchase lines before ``as_of`` as integer codes, grouped into orders: computed once, shared.

User, item and interaction features all read the same purchase lines (not returns, strictly
before ``as_of``). :class:`Purchases` holds them as integer codes and one row per order: an order
belongs to its first line's customer and is dated by its earliest line (in a valid export every
line of an order has both). When each order's lines are contiguous, as in any export, the orders
come from run boundaries (no sort, no hashing); otherwise from a pandas group-by.

Two orderings are computed at most once and only when asked for: the orders by customer and time
(:attr:`Purchases.by_customer`) and the distinct (customer, item, order) triples sorted by
customer, item and time (:attr:`Purchases.chains`), from one sort of an int64 key.
Build one with :meth:`Purchases.of` and pass it to the feature functions as ``purchases=``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd

from features.arrays import run_starts
from features.schema import (
    CUSTOMER_ID,
    IS_RETURN,
    ITEM_ID,
    ORDER_ID,
    ORDERED_AT,
    QUANTITY,
    UNIT_PRICE,
)

DAY = np.timedelta64(1, "D")
KEY_BITS = 63  # the chains sort packs customer, item and order rank into one int64 up to this


def as_timestamp(as_of: object) -> pd.Timestamp:
    """``as_of`` as a Timestamp; a clear error for something that is not a date."""
    ts = pd.Timestamp(as_of)  # type: ignore[arg-type]
    if ts is pd.NaT:
        raise ValueError("as_of must be a date")
    return ts


def id_codes(series: pd.Series) -> tuple[np.ndarray, pd.Index]:
    """Integer codes (-1 if missing; the categorical's own int width) and categories of ids.

    A categorical keeps its categories and their order; anything else is factorized, sorted.
    """
    if isinstance(series.dtype, pd.CategoricalDtype):
        return series.array.codes, series.cat.categories  # a read-only view, not a copy
    codes, uniques = pd.factorize(series, sort=True)
    return codes, pd.Index(uniques)


@dataclass(frozen=True)
class Chains:
    """Distinct (customer, item, order) triples, sorted by customer, item and order time.

    ``customer``/``item`` are codes, ``order`` rows of the order-level arrays; ``new_pair`` marks
    the first triple of each (customer, item) pair. Within a pair the orders run oldest first.
    """

    customer: np.ndarray
    item: np.ndarray
    order: np.ndarray
    new_pair: np.ndarray

    @cached_property
    def pair_start(self) -> np.ndarray:
        """Index of the first (oldest) triple of each pair."""
        return np.flatnonzero(self.new_pair).astype(np.int32)

    @cached_property
    def pair_end(self) -> np.ndarray:
        """Index of the last (newest) triple of each pair."""
        start = self.pair_start
        return (np.r_[start[1:], len(self.new_pair)][: len(start)] - 1).astype(np.int32)


class Purchases:
    """Purchase lines strictly before ``as_of`` (codes, in table order) and their orders.

    Line level (purchase lines only): ``customer``, ``item``, ``line_order`` (the row of the
    line's order). Order level (orders in order of their first purchase line): ``o_customer``,
    ``o_time`` (earliest line, the table's datetime64 unit), ``o_value`` (sum of quantity x unit
    price), ``o_units``, ``o_lines``. ``buy``/``ret`` are masks over the whole table.
    """

    def __init__(self, orders: pd.DataFrame, as_of: object) -> None:
        self.as_of = as_timestamp(as_of)
        self.orders = orders
        when = orders[ORDERED_AT].to_numpy()
        is_ret = (
            orders[IS_RETURN].to_numpy(dtype=bool)
            if IS_RETURN in orders
            else (orders[QUANTITY].to_numpy() < 0)
        )
        before = when < np.datetime64(self.as_of)
        self.buy = before & ~is_ret
        self.ret = before & is_ret
        cust, self.customers = id_codes(orders[CUSTOMER_ID])
        item, self.items = id_codes(orders[ITEM_ID])
        order, _ = id_codes(orders[ORDER_ID])
        self.customer_all = cust
        self.item_all = item
        self.order_all = order
        self.customer = cust[self.buy]
        self.item = item[self.buy]
        self._group_orders(order, when)

    @classmethod
    def of(cls, orders: pd.DataFrame, as_of: object) -> Purchases:
        """The purchases of ``orders`` before ``as_of``."""
        return cls(orders, as_of)

    @property
    def n_customers(self) -> int:
        return len(self.customers)

    @property
    def n_items(self) -> int:
        return len(self.items)

    @property
    def n_orders(self) -> int:
        return len(self.o_customer)

    def line(self, column: str) -> np.ndarray:
        """A float column of the purchase lines (e.g. quantity), in table order.

        Not kept: one float array per line costs more memory than selecting it again.
        """
        return self.orders[column].to_numpy(dtype=np.float64)[self.buy]

    @property
    def o_lines(self) -> np.ndarray:
        """Number of purchase lines of each order (float)."""
        return self._o_lines.astype(np.float64)

    def _group_orders(self, order_all: np.ndarray, when_all: np.ndarray) -> None:
        """Order-level arrays from the table's order codes and times (purchase lines only)."""
        order, when = order_all[self.buy], when_all[self.buy]
        self._time_unit = np.datetime_data(when.dtype)[0] if len(when) else "us"
        qty = self.line(QUANTITY)
        value = self.line(UNIT_PRICE)
        value *= qty
        t = when.view(np.int64)
        n = len(order)
        new_run = run_starts(order)
        starts = np.flatnonzero(new_run)
        distinct = int(np.count_nonzero(np.bincount(order, minlength=1))) if n else 0
        if len(starts) == distinct:  # every order's lines are contiguous: runs are the orders
            # np.*.reduceat is what pandas' group-by runs on sorted groups: same sums, same bits
            self.o_customer = self.customer[starts]
            self.o_time = np.minimum.reduceat(t, starts) if n else t[:0]
            self.o_value = np.add.reduceat(value, starts) if n else value[:0]
            self.o_units = np.add.reduceat(qty, starts) if n else qty[:0]
            self._o_lines = np.diff(np.r_[starts, n]).astype(np.int32)
            del qty, value, t, order, when  # before the line-level array below: a lower peak
            line_order: np.ndarray = np.cumsum(new_run, dtype=np.int32 if n < 2**31 else np.int64)
            line_order -= 1
            self.line_order = line_order
        else:
            frame = pd.DataFrame({"o": order, "c": self.customer, "t": t, "v": value, "q": qty})
            g = frame.groupby("o", sort=False)
            self.o_customer = g["c"].first().to_numpy()
            self.o_time = g["t"].min().to_numpy()
            self.o_value = g["v"].sum().to_numpy()
            self.o_units = g["q"].sum().to_numpy()
            self._o_lines = g["c"].size().to_numpy().astype(np.int32)
            self.line_order = np.asarray(g.ngroup().to_numpy(), dtype=np.int64)

    @property
    def o_when(self) -> np.ndarray:
        """Order times as datetime64 (the table's unit)."""
        return self.o_time.view(f"datetime64[{self._time_unit}]")

    @cached_property
    def o_age(self) -> np.ndarray:
        """Days from each order to ``as_of`` (float)."""
        return np.asarray((np.datetime64(self.as_of) - self.o_when) / DAY, dtype=np.float64)  # type: ignore[operator]

    @property
    def o_day(self) -> np.ndarray:
        """Calendar day of each order (days since 1970)."""
        return self.o_when.astype("datetime64[D]").astype(np.int64)

    @cached_property
    def time_rank(self) -> np.ndarray | None:
        """A rank of the orders that puts each customer's orders in time order (ties: first
        order first): None when the rows themselves do (an export sorted by time, or by customer
        and time), else the rank of each order by time."""
        n = np.int64(max(self.n_orders, 1))
        key = self.o_customer.astype(np.int64) * n
        key += np.arange(len(key))
        key.sort()
        key %= n  # order rows by customer, then row
        age = self.o_age[key]
        c = self.o_customer[key]
        if len(key) < 2 or bool(np.all((age[1:] <= age[:-1]) | (c[1:] != c[:-1]))):
            self.__dict__["by_customer"] = key.astype(np.int32)
            return None
        rank = np.empty(len(self.o_age), dtype=np.int64)
        rank[np.argsort(-self.o_age, kind="stable")] = np.arange(len(self.o_age))
        return rank

    def _by_rank(self, rank: np.ndarray) -> np.ndarray:
        """Order rows from time ranks."""
        if self.time_rank is None:
            return rank
        inverse = np.empty(len(self.time_rank), dtype=np.int64)
        inverse[self.time_rank] = np.arange(len(self.time_rank))
        return inverse[rank]

    @cached_property
    def by_customer(self) -> np.ndarray:
        """Order rows sorted by customer, then time (ties: first order first)."""
        if self.time_rank is None:
            return self.__dict__["by_customer"]  # found by time_rank
        n = np.int64(max(self.n_orders, 1))
        key = self.o_customer.astype(np.int64) * n
        key += self.time_rank
        key.sort()
        key %= n
        return self._by_rank(key)

    @cached_property
    def chains(self) -> Chains:
        """:class:`Chains` of the purchase lines (one sort of an int64 key)."""
        item_bits = max(int(self.n_items).bit_length(), 1)
        order_bits = max(int(self.n_orders).bit_length(), 1)
        cust_bits = max(int(self.n_customers).bit_length(), 1)
        rank = self.line_order if self.time_rank is None else self.time_rank[self.line_order]
        if cust_bits + item_bits + order_bits <= KEY_BITS:
            key = self.customer.astype(np.int64)  # built in place: one array of the lines
            key <<= item_bits
            key |= self.item
            key <<= order_bits
            key |= np.asarray(rank, dtype=np.int64)
            key.sort()
            keep = run_starts(key)
            if not keep.all():
                key = key[keep]
            del keep
            r = (key & ((1 << order_bits) - 1)).astype(np.int64)
            key >>= order_bits  # (customer, item) pairs
            new_pair = run_starts(key)
            i = (key & ((1 << item_bits) - 1)).astype(np.int32)
            key >>= item_bits
            c = key.astype(np.int32)
            del key
            return Chains(c, i, self._by_rank(r).astype(np.int32), new_pair)
        # too many ids for one key: sort by three keys
        idx = np.lexsort((rank, self.item, self.customer))
        c, i, r = self.customer[idx], self.item[idx], np.asarray(rank[idx], dtype=np.int64)
        keep = run_starts(c, i, r)
        c, i, r = c[keep], i[keep], r[keep]
        return Chains(c, i, self._by_rank(r), run_starts(c, i))
