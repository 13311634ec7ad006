"""User-feature snapshots for the customer models: a capped training population, computed once.

Two things keep the churn, repurchase and value models' training affordable on large shops:

- **A fixed sample of customers.** When more than ``max_customers`` customers have an order
  before ``as_of``, every training/validation snapshot uses the same ``max_customers`` customers:
  those with the smallest hash of their id string (:func:`sample_ids`, pandas' SipHash with its
  fixed key, so the sample is the same in every run and on every machine and a customer is in it
  at every cutoff or at none). Their features are computed from their own orders only, with the
  per-item statistics (popularity, repeat rate, retention) of *all* customers passed in as
  ``item_stats`` (:func:`features.users.item_statistics`), exactly as the Dask engine computes
  one customer partition: a sampled customer's row equals its row in the full table's features.
  At or below the cap nothing is sampled (the population is every customer).
- **No feature computed twice.** :class:`UserSnapshots` caches the features of one orders table
  by (cutoff, population), evicting the least recently used beyond ``max_bytes``. The churn,
  repurchase and value models of one training share it through :func:`snapshots_for` (one cache
  per orders table, freed with the table). A cache built on the whole table serves fits on any
  prefix of it: features at a cutoff read only order lines strictly before the cutoff.

Sampled snapshots are stored as float32 (LightGBM bins the values; half the memory); snapshots
of the whole population keep float64 (they are scored and served, and below the cap they are
the training data, unchanged).

What a model reads from the snapshots is decided here too: the calendar grid of cutoffs
(:func:`monthly_cutoffs`), the columns used unless told otherwise (:func:`default_features`; the
:data:`OPTIONAL_FEATURES` only on request), the rows of the training population
(:func:`select_rows`) and the matrix handed to LightGBM (:func:`as_matrix`).
"""

from __future__ import annotations

import logging
import time
import weakref
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

from features.embedding import EMBED_COLUMNS, embedding_features, item_vectors
from features.habits import HABIT_COLUMNS, habit_features
from features.momentum import item_momentum_stats, momentum_features
from features.purchases import Purchases
from features.rebuy import REBUY_COLUMNS, item_rebuy_gaps, rebuy_features
from features.schema import CUSTOMER_ID
from features.users import item_statistics, user_features_of

#: Default cap of the training population (customers per snapshot); see docs/SCALE.md.
MAX_TRAIN_CUSTOMERS = 100_000
MAX_CACHE_BYTES = 2_000_000_000
MAX_SAMPLES = 3  # samples (their orders and frames) kept: a backtest's and the fit's
#: Snapshot columns a model uses only when asked (``features=``): the items-due-for-re-purchase
#: columns (:mod:`features.rebuy`) and the ordering habits (:mod:`features.habits`) did not
#: raise the validation AUC on Online Retail or CDNOW (the fits' own validation cutoffs, labels
#: ending by as_of).
OPTIONAL_FEATURES: frozenset[str] = frozenset(REBUY_COLUMNS) | frozenset(HABIT_COLUMNS)

log = logging.getLogger(__name__)
#: item statistics of all customers at a cutoff: users', re-buy gaps' (optional), momentum's
_ItemStats = tuple[pd.DataFrame, pd.DataFrame | None, pd.DataFrame]


def customer_features(
    orders: pd.DataFrame,
    as_of: object,
    *,
    items: pd.DataFrame | None = None,
    customers: pd.DataFrame | None = None,
    item_stats: pd.DataFrame | None = None,
    gap_stats: pd.DataFrame | None = None,
    momentum_stats: pd.DataFrame | None = None,
    vectors: pd.DataFrame | None = None,
    optional: bool = False,
) -> pd.DataFrame:
    """The customer models' features at ``as_of``: :func:`features.users.user_features`, the
    item momentum of :func:`features.momentum.momentum_features`, the embedding of what they
    buy of :func:`features.embedding.embedding_features` and, with ``optional``, the
    re-buy columns of :func:`features.rebuy.rebuy_features` and the ordering habits of
    :func:`features.habits.habit_features` (one :class:`Purchases` for all; the models use
    those only when asked, and they cost ~70% more time).

    ``item_stats`` / ``gap_stats`` / ``momentum_stats`` / ``vectors``: the item statistics of
    all customers (:func:`~features.users.item_statistics`,
    :func:`~features.rebuy.item_rebuy_gaps`, :func:`~features.momentum.item_momentum_stats`,
    :func:`~features.embedding.item_vectors`) when ``orders`` holds only some of them.
    """
    p = Purchases.of(orders, as_of)
    frame = user_features_of(p, items=items, customers=customers, item_stats=item_stats)
    momentum = momentum_features(p, momentum_stats).reindex(frame.index)
    for name in momentum.columns:  # a new block beside the features' one: no copy of those
        frame[name] = momentum[name].to_numpy()
    embedding = embedding_features(p, vectors).reindex(frame.index)
    for name in EMBED_COLUMNS:
        frame[name] = embedding[name].to_numpy()
    if not optional:
        return frame
    rebuy = rebuy_features(p, gap_stats).reindex(frame.index)
    habits = habit_features(p).reindex(frame.index)
    return pd.concat([frame, rebuy, habits], axis=1)


def monthly_cutoffs(
    first: pd.Timestamp,
    as_of: pd.Timestamp,
    horizon_days: int,
    min_history_days: int,
    n: int,
    per_month: int = 1,
) -> list[pd.Timestamp]:
    """Up to ``n`` cutoffs before ``as_of`` (latest first) on a calendar grid of ``per_month``
    points a month (1: month starts; 2: the 1st and the 16th), whose label window ends by
    ``as_of`` and that have at least ``min_history_days`` of history.

    Cutoffs lie on one calendar grid whatever ``as_of`` is (for an ``as_of`` on a month start
    and ``per_month`` 1: ``as_of - k months``), so the fits and backtests of one training, whose
    ``as_of`` differ, share their snapshots' cutoffs (:class:`UserSnapshots` computes the
    item statistics of a cutoff once).
    """
    if per_month < 1:
        raise ValueError(f"per_month must be >= 1, got {per_month}")
    as_of = pd.Timestamp(as_of)
    anchor = as_of.normalize().replace(day=1)  # month start on or before as_of
    # day offsets of the grid points within a month, latest first (per_month 2: 15, 0)
    offsets = [pd.Timedelta(days=(30 * i) // per_month) for i in reversed(range(per_month))]
    out: list[pd.Timestamp] = []
    k = 0
    while len(out) < n:
        month = anchor - pd.DateOffset(months=k)
        k += 1
        for off in offsets:
            c = pd.Timestamp(month + off)
            if c >= as_of:
                continue
            if c < first + pd.Timedelta(days=min_history_days):
                return out
            if c + pd.Timedelta(days=horizon_days) <= as_of and len(out) < n:
                out.append(c)
    return out


def uses_optional(names: Iterable[str]) -> bool:
    """True when ``names`` include a column of :data:`OPTIONAL_FEATURES`."""
    return not OPTIONAL_FEATURES.isdisjoint(names)


def default_features(columns: pd.Index | list[str]) -> list[str]:
    """The columns a model uses unless told otherwise: every snapshot column except
    :data:`OPTIONAL_FEATURES`."""
    return [c for c in columns if c not in OPTIONAL_FEATURES]


def as_matrix(frame: pd.DataFrame) -> np.ndarray:
    """The frame's values for LightGBM: float32 when every column is (sampled snapshots), else
    float64 (no copy beyond the one conversion)."""
    if len(frame.columns) and all(t == np.float32 for t in frame.dtypes):
        return frame.to_numpy(np.float32)
    return frame.to_numpy(np.float64)


def select_rows(frame: pd.DataFrame, population: pd.Index | None) -> pd.DataFrame:
    """The rows of ``frame`` whose customer id is in ``population`` (all rows for None)."""
    if population is None:
        return frame
    return frame.loc[frame.index.isin(population)]


def id_hash(ids: pd.Index | np.ndarray) -> np.ndarray:
    """A stable uint64 hash of each id's string form (same value in every run and machine)."""
    strings = np.asarray(ids, dtype=object).astype(str).astype(object)
    return np.asarray(pd.util.hash_array(strings), dtype=np.uint64)


def sample_ids(ids: pd.Index, cap: int) -> pd.Index | None:
    """The ``cap`` ids of ``ids`` with the smallest :func:`id_hash` (ties: the smaller string),
    sorted as in ``ids``; None when there are no more than ``cap`` ids (no sampling)."""
    if cap < 1:
        raise ValueError(f"the training population cap must be >= 1, got {cap}")
    ids = pd.Index(ids).unique()
    if len(ids) <= cap:
        return None
    order = np.lexsort((ids.astype(str).to_numpy(), id_hash(ids)))
    return ids[np.sort(order[:cap])]


def customers_before(orders: pd.DataFrame, as_of: pd.Timestamp) -> pd.Index:
    """Ids of the customers with an order line strictly before ``as_of``."""
    col = orders[CUSTOMER_ID]
    before = (orders["ordered_at"] < as_of).to_numpy()
    if isinstance(col.dtype, pd.CategoricalDtype):
        codes = col.cat.codes.to_numpy()[before]
        present = np.bincount(codes[codes >= 0], minlength=len(col.cat.categories)) > 0
        return col.cat.categories[present]
    return pd.Index(col.to_numpy()[before]).dropna().unique()


class UserSnapshots:
    """:func:`~features.users.user_features` of one orders table at many cutoffs, each computed
    once, for the whole population or a fixed sample of customers (see the module docstring).

    ``optional``: include the optional columns (see :func:`customer_features`). The cache keeps
    weak references to the tables (it never keeps them alive). Returned frames are shared: treat
    them as read-only.
    """

    def __init__(
        self,
        orders: pd.DataFrame,
        *,
        items: pd.DataFrame | None = None,
        customers: pd.DataFrame | None = None,
        max_bytes: int = MAX_CACHE_BYTES,
        optional: bool = False,
    ) -> None:
        self.optional = optional
        self._orders = weakref.ref(orders)
        self._items = None if items is None else weakref.ref(items)
        self._customers = None if customers is None else weakref.ref(customers)
        self.max_bytes = max_bytes
        self._frames: OrderedDict[tuple[pd.Timestamp, Any], pd.DataFrame] = OrderedDict()
        self._item_stats: OrderedDict[pd.Timestamp, _ItemStats] = OrderedDict()
        self._item_vectors: OrderedDict[pd.Timestamp, pd.DataFrame] = OrderedDict()
        # per sample: its ids, their orders and its largest (id hash, id string)
        self._samples: OrderedDict[Any, tuple[pd.Index, pd.DataFrame, tuple[int, str]]] = (
            OrderedDict()
        )
        self.computed: list[tuple[pd.Timestamp, Any]] = []  # what was computed, in order
        self.seconds = 0.0  # spent computing features (item statistics included)

    def serves(
        self, orders: pd.DataFrame, items: pd.DataFrame | None, customers: pd.DataFrame | None
    ) -> bool:
        """True when this cache was built on these very tables."""

        def same(ref: weakref.ref[pd.DataFrame] | None, table: pd.DataFrame | None) -> bool:
            return (ref is None and table is None) or (ref is not None and ref() is table)

        return (
            same(self._orders, orders)
            and same(self._items, items)
            and same(self._customers, customers)
        )

    def _table(self, ref: weakref.ref[pd.DataFrame] | None) -> pd.DataFrame | None:
        if ref is None:
            return None
        table = ref()
        if table is None:
            raise RuntimeError("the orders table of this snapshot cache was freed")
        return table

    @property
    def orders(self) -> pd.DataFrame:
        table = self._table(self._orders)
        assert table is not None
        return table

    def population(self, as_of: pd.Timestamp, cap: int | None) -> pd.Index | None:
        """The training sample of a fit at ``as_of`` (None: every customer, at or below the cap)."""
        if cap is None:
            return None
        key = (pd.Timestamp(as_of), int(cap))
        if key in self._samples:
            self._samples.move_to_end(key)
            return self._samples[key][0]
        ids = sample_ids(customers_before(self.orders, key[0]), key[1])
        if ids is None:
            return None
        orders = self.orders
        keep = orders[CUSTOMER_ID].isin(ids).to_numpy()
        hashes, strings = id_hash(ids), ids.astype(str).to_numpy()
        last = np.lexsort((strings, hashes))[-1]
        self._samples[key] = (ids, orders.loc[keep], (int(hashes[last]), str(strings[last])))
        while len(self._samples) > MAX_SAMPLES:  # the oldest sample goes, with its frames
            old, *_ = self._samples.popitem(last=False)
            self._frames = OrderedDict((k, v) for k, v in self._frames.items() if k[1] != old)
        return ids

    def features(self, cutoff: pd.Timestamp, sample: pd.Index | None = None) -> pd.DataFrame:
        """User features at ``cutoff`` of every customer, or of ``sample`` (from
        :meth:`population`) with the item statistics of every customer."""
        cutoff = pd.Timestamp(cutoff)
        key = (cutoff, None if sample is None else self._sample_key(sample))
        if key in self._frames:
            self._frames.move_to_end(key)
            return self._frames[key]
        start = time.perf_counter()
        derived = None if sample is None else self._from_larger_sample(cutoff, key[1])
        if derived is not None:
            self._frames[key] = derived
            self._evict()
            return derived
        frame = self.compute(cutoff, sample)
        if sample is not None:
            frame = frame.astype(np.float32)
        self.computed.append(key)
        took = time.perf_counter() - start
        self.seconds += took
        log.debug(
            "user features at %s (%s): %d customers in %.1f s",
            cutoff.date(),
            "all" if sample is None else "sample",
            len(frame),
            took,
        )
        self._frames[key] = frame
        self._evict()
        return frame

    def _from_larger_sample(self, cutoff: pd.Timestamp, key: Any) -> pd.DataFrame | None:
        """The frame of sample ``key`` at ``cutoff`` as rows of a cached frame of a larger sample
        (None when there is none). Samples are "the customers before their ``as_of`` up to a
        largest (id hash, id string)", so at a cutoff on or before both ``as_of`` the smaller
        sample's customers are the larger one's up to the smaller bound, and their rows are
        equal (a row reads the customer's own orders and every customer's item statistics).
        This is how a backtest's snapshots serve the fit's at the cutoffs they share."""
        as_of, bound = key[0], self._samples[key][2]
        for (c, other), frame in self._frames.items():
            if c != cutoff or other is None or other not in self._samples:
                continue
            if cutoff > min(as_of, other[0]) or self._samples[other][2] < bound:
                continue
            hashes = id_hash(frame.index)
            strings = frame.index.astype(str).to_numpy()
            inside = (hashes < bound[0]) | ((hashes == bound[0]) & (strings <= bound[1]))
            log.debug(
                "user features at %s (sample): %d customers of a larger sample's frame",
                cutoff.date(),
                int(inside.sum()),
            )
            return frame.loc[inside]
        return None

    def _vectors(self, cutoff: pd.Timestamp, purchases: Purchases | None = None) -> pd.DataFrame:
        """:func:`~features.embedding.item_vectors` of every customer at ``cutoff``, cached
        (``purchases``: those of every customer at ``cutoff`` when already built)."""
        if cutoff not in self._item_vectors:
            p = Purchases.of(self.orders, cutoff) if purchases is None else purchases
            self._item_vectors[cutoff] = item_vectors(p)
            while len(self._item_vectors) > 64:
                self._item_vectors.popitem(last=False)
        return self._item_vectors[cutoff]

    def _sample_key(self, sample: pd.Index) -> Any:
        for key, (ids, *_) in self._samples.items():
            if ids is sample:
                return key
        raise ValueError("unknown sample: pass the index returned by population()")

    def compute(self, cutoff: pd.Timestamp, sample: pd.Index | None) -> pd.DataFrame:
        """:func:`customer_features` at ``cutoff`` of every customer, or of ``sample`` with the
        item statistics of every customer (:meth:`features` stores the latter as float32).

        The hook a subclass overrides to compute them elsewhere, with equal results
        (:class:`training.dask_models.DaskUserSnapshots`: per customer partition on a Dask
        cluster).
        """
        tables = {"items": self._table(self._items), "customers": self._table(self._customers)}
        if sample is None:
            return customer_features(self.orders, cutoff, **tables, optional=self.optional)
        item_stats, gap_stats, momentum_stats = self._stats(cutoff)
        return customer_features(
            self._samples[self._sample_key(sample)][1],
            cutoff,
            **tables,
            item_stats=item_stats,
            gap_stats=gap_stats,
            momentum_stats=momentum_stats,
            vectors=self._vectors(cutoff),
            optional=self.optional,
        )

    def _stats(self, cutoff: pd.Timestamp) -> _ItemStats:
        """:meth:`compute_stats` at ``cutoff``, cached."""
        if cutoff not in self._item_stats:
            self._item_stats[cutoff] = self.compute_stats(cutoff)
            while len(self._item_stats) > 64:
                self._item_stats.popitem(last=False)
        return self._item_stats[cutoff]

    def compute_stats(self, cutoff: pd.Timestamp) -> _ItemStats:
        """Item statistics, (with the optional columns) re-buy gap statistics and item momentum
        statistics of every customer at ``cutoff`` (a hook, as :meth:`compute`)."""
        p = Purchases.of(self.orders, cutoff)
        self._vectors(cutoff, p)  # the embedding's item vectors from the same pass
        gaps = item_rebuy_gaps(p) if self.optional else None
        return item_statistics(p), gaps, item_momentum_stats(p)

    def _evict(self) -> None:
        sizes = {k: int(v.memory_usage(index=True).sum()) for k, v in self._frames.items()}
        while len(self._frames) > 1 and sum(sizes.values()) > self.max_bytes:
            key, _ = self._frames.popitem(last=False)
            sizes.pop(key)


_CACHES: dict[int, UserSnapshots] = {}


def snapshots_for(
    orders: pd.DataFrame,
    items: pd.DataFrame | None = None,
    customers: pd.DataFrame | None = None,
) -> UserSnapshots:
    """The shared :class:`UserSnapshots` of these tables (created on first use, dropped when the
    orders table is freed)."""
    cache = _CACHES.get(id(orders))
    if cache is not None and cache.serves(orders, items, customers):
        return cache
    cache = UserSnapshots(orders, items=items, customers=customers)
    key = id(orders)
    _CACHES[key] = cache
    weakref.finalize(orders, _CACHES.pop, key, None)
    return cache
