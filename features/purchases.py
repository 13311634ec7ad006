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

from features.arrays import blocks, run_starts
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
    """``as_of`` as a naive Timestamp; a clear error for something that is not a date.

    Order times are naive UTC once validated (times with an offset are converted), so an
    ``as_of`` with a UTC offset is converted to naive UTC too: without it, features compared it
    in UTC (NumPy drops the offset with a warning) while labels and weekly demand raised
    TypeError (pandas refuses to compare naive and aware times).
    """
    ts = pd.Timestamp(as_of)  # type: ignore[arg-type]
    if ts is pd.NaT:
        raise ValueError("as_of must be a date")
    if ts.tzinfo is not None:
        ts = ts.tz_convert("UTC").tz_localize(None)
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

    ``item`` holds item codes (in the width of the item codes), ``order`` rows of the
    order-level arrays; ``new_pair`` marks the first triple of each (customer, item) pair and
    ``pair_customer`` is the customer code of each pair. Within a pair the orders run oldest
    first.
    """

    pair_customer: np.ndarray
    item: np.ndarray
    order: np.ndarray
    new_pair: np.ndarray

    @cached_property
    def customer(self) -> np.ndarray:
        """Customer code of each triple (built when first asked for; pairs carry it already)."""
        return np.repeat(self.pair_customer, self.pair_end - self.pair_start + 1)

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

    Line level (purchase lines only): ``customer`` (selected when asked for), ``item``,
    ``line_order`` (the row of the line's order). Order level (orders in order of their first purchase line): ``o_customer``,
    ``o_time`` (earliest line, the table's datetime64 unit). ``buy``/``ret`` are masks over the
    whole table. Order sums (:meth:`order_values`, :meth:`order_units`, :meth:`order_lines`)
    are computed when asked for and not kept: each costs an array per order for as long as the
    purchases live, while only user features read them.
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
        self.item = item[self.buy]
        self._group_orders(order, when)

    @property
    def customer(self) -> np.ndarray:
        """Customer code of each purchase line (selected when asked for: not kept)."""
        return self.customer_all[self.buy]

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

    def order_lines(self) -> np.ndarray:
        """Number of purchase lines of each order (float)."""
        return np.bincount(self.line_order, minlength=self.n_orders).astype(np.float64)

    def order_units(self) -> np.ndarray:
        """Sum of the quantities of each order's purchase lines."""
        return self._order_sum(self.line(QUANTITY))

    def order_values(self) -> np.ndarray:
        """Sum of quantity x unit price over each order's purchase lines."""
        value = self.line(UNIT_PRICE)
        value *= self.line(QUANTITY)
        return self._order_sum(value)

    def _order_sum(self, values: np.ndarray) -> np.ndarray:
        """Per-order sums of a line array, as the order grouping adds them (same bits)."""
        if not len(values):
            return values[:0]
        if self._contiguous:
            # np.add.reduceat is what pandas' group-by runs on sorted groups: same sums, same bits
            return np.add.reduceat(values, np.flatnonzero(run_starts(self.line_order)))
        sums = pd.Series(values).groupby(self.line_order, sort=True).sum()
        return np.asarray(sums.to_numpy(), dtype=np.float64)

    def _group_orders(self, order_all: np.ndarray, when_all: np.ndarray) -> None:
        """Order-level arrays from the table's order codes and times (purchase lines only)."""
        self._time_unit = np.datetime_data(when_all.dtype)[0] if len(when_all) else "us"
        order = order_all[self.buy]
        n = len(order)
        new_run = run_starts(order)
        self._contiguous = int(np.count_nonzero(new_run)) == _distinct(order)
        del order
        if self._contiguous:  # every order's lines are contiguous: runs are the orders
            line_order: np.ndarray = np.cumsum(new_run, dtype=np.int32 if n < 2**31 else np.int64)
            line_order -= 1
            self.line_order = line_order
            self.o_customer, self.o_time = self._first_customer_earliest_time(new_run, when_all)
        else:
            t = when_all[self.buy].view(np.int64)
            frame = pd.DataFrame({"o": order_all[self.buy], "c": self.customer, "t": t})
            g = frame.groupby("o", sort=False)
            self.o_customer = g["c"].first().to_numpy()
            self.o_time = g["t"].min().to_numpy()
            self.line_order = np.asarray(g.ngroup().to_numpy(), dtype=np.int64)

    def _first_customer_earliest_time(
        self, new_run: np.ndarray, when_all: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per order (contiguous lines): the customer of its first line and its earliest time.

        The table is read a block at a time (no purchase-line copy of the times or customers).
        """
        n_orders = int(self.line_order[-1]) + 1 if len(self.line_order) else 0
        o_customer = np.empty(n_orders, dtype=self.customer_all.dtype)
        o_time = np.full(n_orders, np.iinfo(np.int64).max)
        t_all = when_all.view(np.int64)
        done = 0  # purchase lines before the block
        for rows in blocks(len(self.buy)):
            keep = self.buy[rows]
            lines = slice(done, done + int(np.count_nonzero(keep)))
            order, first = self.line_order[lines], new_run[lines]
            o_customer[order[first]] = self.customer_all[rows][keep][first]
            np.minimum.at(o_time, order, t_all[rows][keep])
            done = lines.stop
        return o_customer, o_time

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
            key = self.customer_all[self.buy].astype(np.int64)  # in place: one array of the lines
            key <<= item_bits
            key |= self.item
            key <<= order_bits
            key |= rank
            key.sort()
            keep = run_starts(key)
            if not keep.all():
                key = key[keep]
            del keep
            # each field straight into an array of its own width (no int64 temporaries)
            r = _masked(key, order_bits, np.int32 if self.time_rank is None else np.int64)
            key >>= order_bits  # (customer, item) pairs
            new_pair = run_starts(key)
            i = _masked(key, item_bits, self.item.dtype)
            key = key[new_pair]  # one per pair
            key >>= item_bits
            c = key.astype(np.int32)
            del key
            return Chains(c, i, self._by_rank(r).astype(np.int32, copy=False), new_pair)
        # too many ids for one key: sort by three keys
        customer = self.customer
        idx = np.lexsort((rank, self.item, customer))
        c, i, r = customer[idx], self.item[idx], np.asarray(rank[idx], dtype=np.int64)
        keep = run_starts(c, i, r)
        c, i, r = c[keep], i[keep], r[keep]
        new_pair = run_starts(c, i)
        return Chains(c[new_pair], i, self._by_rank(r), new_pair)


def _distinct(codes: np.ndarray) -> int:
    """Number of distinct values of non-negative integer codes."""
    if not len(codes):
        return 0
    if codes.min() < 0:
        raise ValueError("codes must be >= 0")
    seen = np.zeros(int(codes.max()) + 1, dtype=bool)
    seen[codes] = True
    return int(np.count_nonzero(seen))


def _masked(key: np.ndarray, bits: int, dtype: np.dtype | type) -> np.ndarray:
    """The low ``bits`` of an int64 ``key``, as ``dtype`` (computed in buffers: no int64 copy)."""
    out = np.empty(len(key), dtype=dtype)
    np.bitwise_and(key, (1 << bits) - 1, out=out, casting="unsafe")
    return out
