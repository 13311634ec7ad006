"""Run the feature pipelines with pandas (one process) or Dask (a cluster), with equal results.

The Dask engine runs the *same* pandas functions (:func:`features.users.user_features`,
:func:`features.items.item_features`, :func:`features.demand.weekly_demand`,
:func:`features.interactions.build_interactions`, the label functions) per entity partition with
``dask.dataframe.map_partitions``: orders shuffled by customer id for users, interactions and
labels, by item id for items and weekly demand. What a partition cannot know is computed first
with Dask's own reductions and passed in:

- the data's first purchase week and last order time (``min``/``max``): the demand calendar and
  whether label windows are covered;
- per-item statistics over *all* customers that user features read (number of buyers, repeat
  buyers, retention of the item's orders: :func:`features.users.item_statistics`): partial
  counts per customer partition, summed with a Dask ``groupby().sum()`` and passed to
  :func:`features.users.user_features` as ``item_stats`` for the four item-dependent columns
  (:data:`ITEM_DEPENDENT_USER_COLUMNS`); the same for any additive per-item statistic
  (:meth:`DaskOrders.item_statistics` with ``stats_fn``, e.g. the item momentum counts of
  :func:`features.momentum.item_momentum_stats`), which :meth:`DaskOrders.per_customer` passes
  to a per-customer function (the customer models' snapshots:
  :class:`training.dask_models.DaskUserSnapshots`);
- the item popularity rank (a rank over all items), from the gathered item frame.

Ids travel as int64 codes of the dataset's categories (global, so a partition orders customers,
items and orders exactly as the pandas run does) and are mapped back to ids at the end. A global
row number keeps each partition's lines in their original order, so floating-point sums run in
the same order and the results are *equal*, not just close (``tests/test_dask_engine.py``).
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp

from features import demand, interactions, items, labels, users
from features.io import Dataset
from features.pipeline import FeatureSet, build_feature_set, check_as_of, default_as_of
from features.purchases import Purchases, as_timestamp
from features.schema import (
    CUSTOMER_ID,
    DISCOUNT,
    IS_RETURN,
    ITEM_ID,
    ORDER_ID,
    ORDERED_AT,
    QUANTITY,
    UNIT_PRICE,
)

if TYPE_CHECKING:
    import dask.dataframe as dd
    from distributed import Client

log = logging.getLogger(__name__)

Engine = Literal["pandas", "dask"]
ENGINES: tuple[str, ...] = ("pandas", "dask")
ROW = "_row"
#: User feature columns that read statistics of the items over all customers.
ITEM_DEPENDENT_USER_COLUMNS = (
    "item_popularity",
    "item_repeat_rate",
    "item_retention",
    "last_order_retention",
)
ID_COLUMNS = (CUSTOMER_ID, ITEM_ID, ORDER_ID)
#: Additive per-item statistics of a :class:`Purchases` (see :func:`item_stat_partials`).
ItemStatsFn = Callable[[Purchases], pd.DataFrame]


# ---------------------------------------------------------------- cluster


@contextmanager
def dask_client(
    scheduler: str | None = None,
    *,
    n_workers: int = 2,
    threads_per_worker: int = 1,
    memory_limit: str | float | None = "auto",
    local_directory: str | Path | None = None,
) -> Iterator[Client]:
    """A client of the cluster at ``scheduler`` (``tcp://host:8786``), or of a LocalCluster.

    The LocalCluster (worker processes, loopback only, OpenMP threads pinned to the worker's
    threads) is closed on exit; a remote cluster is left running.
    """
    from distributed import Client, LocalCluster

    if scheduler:
        client = Client(scheduler)
        try:
            yield client
        finally:
            client.close()
        return
    threads = str(threads_per_worker)
    cluster = LocalCluster(
        n_workers=n_workers,
        threads_per_worker=threads_per_worker,
        processes=True,
        host="127.0.0.1",
        dashboard_address="127.0.0.1:0",
        memory_limit=memory_limit,
        local_directory=str(local_directory) if local_directory else None,
        env={"OMP_NUM_THREADS": threads, "OMP_WAIT_POLICY": "PASSIVE", "OPENBLAS_NUM_THREADS": "1"},
    )
    client = Client(cluster)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


# ---------------------------------------------------------------- ids as global codes


@dataclass(frozen=True)
class Encoded:
    """Orders with ids replaced by int64 codes of the dataset's categories, and the id maps."""

    orders: pd.DataFrame
    customers: pd.Index
    items: pd.Index
    items_table: pd.DataFrame | None
    customers_table: pd.DataFrame | None

    def customer_ids(self, codes: pd.Index | np.ndarray) -> pd.Index:
        return pd.Index(self.customers.take(np.asarray(codes, dtype=np.int64)), name=CUSTOMER_ID)

    def item_ids(self, codes: pd.Index | np.ndarray) -> pd.Index:
        return pd.Index(self.items.take(np.asarray(codes, dtype=np.int64)), name=ITEM_ID)


def _categories(col: pd.Series) -> tuple[np.ndarray, pd.Index]:
    if isinstance(col.dtype, pd.CategoricalDtype):
        return col.cat.codes.to_numpy().astype(np.int64), col.cat.categories
    codes, uniques = pd.factorize(col, sort=True)
    return codes.astype(np.int64), pd.Index(uniques)


def _encode_table(table: pd.DataFrame | None, key: str, index: pd.Index) -> pd.DataFrame | None:
    """``table`` with its ``key`` column as codes of ``index``; unknown ids get codes >= n."""
    if table is None:
        return None
    ids = table[key].astype(str).to_numpy()
    codes = pd.Index(index.astype(str)).get_indexer(ids).astype(np.int64)
    unknown = codes < 0
    if unknown.any():
        codes[unknown] = len(index) + pd.factorize(ids[unknown])[0]
    out = table.copy()
    out[key] = codes
    return out


def encode(dataset: Dataset) -> Encoded:
    """Ids -> int64 codes (order preserved), only the columns features read, and a row number."""
    orders = dataset.orders
    cols: dict[str, Any] = {}
    maps: dict[str, pd.Index] = {}
    for name in ID_COLUMNS:
        codes, cats = _categories(orders[name])
        if (codes < 0).any():
            raise ValueError(f"{name} has missing values; validate the data first")
        cols[name], maps[name] = codes, cats
    for name in (ORDERED_AT, QUANTITY, UNIT_PRICE, IS_RETURN, DISCOUNT):
        if name in orders:
            cols[name] = orders[name].to_numpy()
    cols[ROW] = np.arange(len(orders), dtype=np.int64)
    return Encoded(
        pd.DataFrame(cols),
        maps[CUSTOMER_ID],
        maps[ITEM_ID],
        _encode_table(dataset.items, ITEM_ID, maps[ITEM_ID]),
        _encode_table(dataset.customers, CUSTOMER_ID, maps[CUSTOMER_ID]),
    )


def _in_row_order(part: pd.DataFrame) -> pd.DataFrame:
    return part.sort_values(ROW, kind="stable").reset_index(drop=True)


def _as_categorical(part: pd.DataFrame) -> pd.DataFrame:
    """Id codes as categoricals (categories = sorted codes), as :func:`item_features` expects."""
    part = part.copy()
    for name in ID_COLUMNS:
        part[name] = pd.Categorical(part[name].to_numpy())
    return part


# ---------------------------------------------------------------- item statistics for users


def item_stat_partials(
    orders: pd.DataFrame,
    as_of: pd.Timestamp,
    stats_fn: ItemStatsFn = users.item_statistics,
) -> pd.DataFrame:
    """Per item code, ``stats_fn`` of the customers in ``orders`` (items with a non-zero count).

    ``stats_fn``: per-item counts of a :class:`~features.purchases.Purchases` that add up over
    disjoint sets of customers (:func:`features.users.item_statistics`,
    :func:`features.momentum.item_momentum_stats`): summed over customer partitions they are the
    statistics the pandas run computes from the whole table.
    """
    stats = stats_fn(Purchases.of(orders, as_of))
    stats = stats[(stats.to_numpy() != 0).any(axis=1)]
    stats.index = pd.Index(np.asarray(stats.index, dtype=np.int64), name=ITEM_ID)
    return stats


# ---------------------------------------------------------------- per-partition tasks


def _customers_part(
    part: pd.DataFrame,
    fn: Callable[..., pd.DataFrame],
    as_of: pd.Timestamp,
    population: np.ndarray | None,
    items_table: pd.DataFrame | None,
    customers_table: pd.DataFrame | None,
    **kwargs: Any,
) -> pd.DataFrame:
    part = _in_row_order(part)
    if population is not None:
        keep = np.isin(part[CUSTOMER_ID].to_numpy(), population)
        part = part[keep].reset_index(drop=True)
    return fn(part, as_of, items=items_table, customers=customers_table, **kwargs)


def _items_part(
    part: pd.DataFrame,
    as_of: pd.Timestamp,
    items_table: pd.DataFrame | None,
    empty: pd.DataFrame | None = None,
) -> pd.DataFrame:
    part = _as_categorical(_in_row_order(part))
    bought = (part[ORDERED_AT] < as_of) & ~part[IS_RETURN].to_numpy(dtype=bool)
    if not bought.any() and empty is not None:
        return empty
    out = items.item_features(part, as_of, items=items_table)
    out.index = pd.Index(np.asarray(out.index, dtype=np.int64), name=ITEM_ID)
    return out


def _demand_part(
    part: pd.DataFrame, as_of: pd.Timestamp, start: pd.Timestamp, end: pd.Timestamp
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    part = _in_row_order(part)
    buys = part[(part[ORDERED_AT] < as_of) & ~part[IS_RETURN] & (part[QUANTITY] > 0)]
    weeks = demand.week_ending(buys[ORDERED_AT]).to_numpy()
    if not ((weeks >= start.to_datetime64()) & (weeks <= end.to_datetime64())).any():
        return None
    wd = demand.weekly_demand(part, as_of, start=start, end=end)
    return wd.items.to_numpy().astype(np.int64), wd.units, wd.price


def _interactions_part(
    part: pd.DataFrame, as_of: pd.Timestamp, item_codes: np.ndarray
) -> tuple[np.ndarray, sp.csr_matrix]:
    part = _in_row_order(part)
    m = interactions.build_interactions(part, as_of, item_ids=item_codes.astype(str))
    return m.user_ids.astype(np.int64), m.matrix


def _labels_part(
    part: pd.DataFrame,
    as_of: pd.Timestamp,
    population: np.ndarray,
    days: tuple[int, int, int],
) -> pd.DataFrame:
    part = _in_row_order(part)
    pop = pd.Index(np.asarray(population, dtype=np.int64))
    pop = pop[pop.isin(np.unique(part[CUSTOMER_ID].to_numpy()))]
    return pd.concat(
        [
            labels.churn_labels(part, as_of, pop, days[0]),
            labels.repurchase_labels(part, as_of, pop, days[1]),
            labels.future_spend(part, as_of, pop, days[2]),
        ],
        axis=1,
    )


# ---------------------------------------------------------------- the Dask run


def _gather_objects(ddf: dd.DataFrame, fn: Callable[..., Any], *args: Any) -> list[Any]:
    """Apply ``fn`` to every partition of ``ddf`` and gather the (non-frame) results."""
    import dask

    parts = ddf.to_delayed()
    tasks = [dask.delayed(fn)(p, *args) for p in parts]
    return list(dask.compute(*tasks))


def distribute(client: Client, encoded: Encoded, npartitions: int) -> dd.DataFrame:
    """Scatter the encoded orders to the cluster as a Dask DataFrame of ``npartitions`` pieces."""
    return scatter_frame(client, encoded.orders, npartitions)


def scatter_frame(client: Client, frame: pd.DataFrame, npartitions: int) -> dd.DataFrame:
    """``frame`` as a Dask DataFrame of ``npartitions`` consecutive row blocks scattered over the
    workers (the data is sent once, not embedded in the task graph)."""
    import dask.dataframe as dd

    bounds = np.linspace(0, len(frame), npartitions + 1).astype(int)
    pieces = [frame.iloc[a:b] for a, b in itertools.pairwise(bounds)]
    futures = client.scatter(pieces, hash=False)  # own keys: equal frames scattered twice
    return dd.from_delayed(futures, meta=frame.iloc[:0], verify_meta=False)


class DaskOrders:
    """Validated orders on a Dask cluster, shuffled once by customer and once by item.

    Build it once, then compute features for any number of ``as_of`` dates (training snapshots).
    """

    def __init__(self, client: Client, dataset: Dataset, npartitions: int | None = None) -> None:
        self.client = client
        workers = len(client.scheduler_info().get("workers", {}))
        self.npartitions = npartitions or max(2, 2 * workers)
        self.enc = enc = encode(dataset)
        ddf = distribute(client, enc, self.npartitions)
        self.by_customer = ddf.shuffle(on=CUSTOMER_ID, npartitions=self.npartitions).persist()
        self.by_item = ddf.shuffle(on=ITEM_ID, npartitions=self.npartitions).persist()
        del ddf  # the scattered pieces are released once both shuffles hold the data
        scatter = client.scatter
        self.items_table = (
            scatter(enc.items_table, broadcast=True) if enc.items_table is not None else None
        )
        self.customers_table = (
            scatter(enc.customers_table, broadcast=True)
            if enc.customers_table is not None
            else None
        )

    def item_statistics(
        self, as_of: pd.Timestamp, stats_fn: ItemStatsFn = users.item_statistics
    ) -> pd.DataFrame:
        """:func:`item_stat_partials` per customer partition, summed by a Dask group-by."""
        meta = item_stat_partials(self.enc.orders.iloc[:0], as_of, stats_fn).reset_index()
        partials = self.by_customer.map_partitions(
            lambda part: item_stat_partials(part, as_of, stats_fn).reset_index(), meta=meta
        )
        return partials.groupby(ITEM_ID).sum().compute()

    def per_customer(
        self,
        fn: Callable[..., pd.DataFrame],
        as_of: pd.Timestamp,
        *,
        population: pd.Index | None = None,
        **kwargs: Any,
    ) -> pd.DataFrame:
        """``fn(orders, as_of, items=..., customers=..., **kwargs)`` per customer partition,
        gathered in customer order, indexed by customer id.

        ``fn`` reads its customers' own orders and what ``kwargs`` pass in (item statistics of
        every customer, :meth:`item_statistics`), so each row is the row of the whole table.
        ``population``: customer ids; each partition keeps only their orders.
        """
        enc = self.enc
        codes = None
        if population is not None:
            codes = enc.customers.get_indexer(population)
            if (codes < 0).any():
                raise ValueError("population has customer ids that are not in the orders")
        tables = (enc.items_table, enc.customers_table)
        meta = _customers_part(enc.orders.iloc[:0], fn, as_of, None, *tables, **kwargs)
        parts = self.by_customer.map_partitions(
            _customers_part,
            fn,
            as_of,
            codes,
            self.items_table,
            self.customers_table,
            meta=meta,
            **kwargs,
        ).compute()
        frame = parts.sort_index()
        frame.index = enc.customer_ids(frame.index)
        return frame

    def users(self, as_of: pd.Timestamp) -> pd.DataFrame:
        """:func:`features.users.user_features` per customer partition (equal to pandas)."""
        stats = self.item_statistics(as_of)
        return self.per_customer(users.user_features, as_of, item_stats=stats)

    def items(self, as_of: pd.Timestamp) -> pd.DataFrame:
        """:func:`features.items.item_features` per item partition; the rank over all items."""
        meta = _items_meta(self.enc, as_of)
        parts = self.by_item.map_partitions(
            _items_part, as_of, self.items_table, meta, meta=meta
        ).compute()
        frame = parts.sort_index()
        frame["popularity_rank"] = (
            pd.Series(
                frame["buyers_90d"].to_numpy(dtype=float) + frame["buyers_total"].to_numpy() * 1e-9
            ).rank(ascending=False, method="first")
        ).to_numpy()
        frame.index = self.enc.item_ids(frame.index)
        return frame

    def interactions(self, as_of: pd.Timestamp) -> interactions.Interactions:
        """:func:`features.interactions.build_interactions` per customer partition, stacked."""
        return _interactions(self.by_customer, self.enc, as_of)

    def weekly_demand(self, as_of: pd.Timestamp) -> demand.WeeklyDemand:
        """:func:`features.demand.weekly_demand` per item partition on the global calendar."""
        return _weekly(self.by_item, self.enc, as_of)

    def last_order(self) -> pd.Timestamp:
        return pd.Timestamp(self.by_customer[ORDERED_AT].max().compute())

    def labels(
        self, as_of: pd.Timestamp, population: pd.Index, days: tuple[int, int, int]
    ) -> pd.DataFrame:
        """Churn, repurchase, spend of ``population`` (customer ids) and window coverage."""
        enc = self.enc
        codes = enc.customers.get_indexer(population)
        pieces = _gather_objects(self.by_customer, _labels_part, as_of, codes, days)
        lab = pd.concat(pieces).sort_index()
        lab.index = enc.customer_ids(lab.index)
        lab = lab.reindex(population)
        stamp = pd.DataFrame({ORDERED_AT: [self.last_order()]})
        for name, d in zip(("churn", "repurchase", "spend"), days, strict=True):
            lab[f"{name}_covered"] = labels.label_window_covered(stamp, as_of, d)
        return lab

    def feature_set(
        self,
        as_of: pd.Timestamp,
        *,
        churn_days: int = 90,
        repurchase_days: int = 30,
        value_days: int = 365,
    ) -> FeatureSet:
        """Everything :func:`features.pipeline.build_feature_set` returns, equal to it."""
        timings: dict[str, float] = {}

        def timed(name: str, fn: Callable[..., Any], *args: Any) -> Any:
            start = time.perf_counter()
            result = fn(*args)
            timings[name] = _lap(start)
            log.info("dask %s features: %.2f s", name, timings[name])
            return result

        user_frame = timed("users", self.users, as_of)
        item_frame = timed("items", self.items, as_of)
        matrix = timed("interactions", self.interactions, as_of)
        weekly = timed("demand", self.weekly_demand, as_of)
        label_frame = None
        if self.last_order() >= as_of:
            days = (churn_days, repurchase_days, value_days)
            label_frame = timed("labels", self.labels, as_of, user_frame.index, days)
        return FeatureSet(as_of, user_frame, item_frame, matrix, weekly, label_frame, timings)


def build_feature_set_dask(
    dataset: Dataset,
    as_of: pd.Timestamp | str | None,
    client: Client,
    *,
    npartitions: int | None = None,
    churn_days: int = 90,
    repurchase_days: int = 30,
    value_days: int = 365,
) -> FeatureSet:
    """:func:`features.pipeline.build_feature_set` on a Dask cluster: equal output."""
    orders = dataset.orders
    as_of = default_as_of(orders) if as_of is None else as_timestamp(as_of)
    check_as_of(orders, as_of)
    start = time.perf_counter()
    data = DaskOrders(client, dataset, npartitions)
    distribute_s = _lap(start)
    log.info("dask: orders distributed and shuffled in %.2f s", distribute_s)
    fs = data.feature_set(
        as_of, churn_days=churn_days, repurchase_days=repurchase_days, value_days=value_days
    )
    fs.timings_s = {"distribute": distribute_s, **fs.timings_s}
    return fs


def _lap(start: float) -> float:
    return round(time.perf_counter() - start, 3)


def _items_meta(enc: Encoded, as_of: pd.Timestamp) -> pd.DataFrame:
    """The empty frame :func:`_items_part` returns (columns and dtypes), from a tiny run."""
    o = enc.orders
    first = o[(o[ORDERED_AT] < as_of) & ~o[IS_RETURN]].head(1)
    return _items_part(first, as_of, enc.items_table).iloc[:0]


def _interactions(
    by_customer: dd.DataFrame, enc: Encoded, as_of: pd.Timestamp
) -> interactions.Interactions:
    # columns: item codes in the order of the sorted item id strings (what the pandas run uses)
    item_order = np.argsort(enc.items.astype(str).to_numpy(), kind="stable")
    pieces = _gather_objects(by_customer, _interactions_part, as_of, item_order)
    codes = np.concatenate([p[0] for p in pieces])
    matrix = sp.vstack([p[1] for p in pieces], format="csr")
    user_ids = enc.customers.take(codes).astype(str).to_numpy()
    rows = np.argsort(user_ids, kind="stable")
    item_ids = enc.items.take(item_order).astype(str).to_numpy()
    used = np.flatnonzero(np.diff(matrix.tocsc().indptr) > 0)
    full = matrix[rows].tocsr()
    # the pandas run keeps only items bought before as_of
    present = np.zeros(len(item_ids), dtype=bool)
    present[used] = True
    out = full[:, present].tocsr()
    out.sort_indices()
    return interactions.Interactions(out.astype(np.float32), user_ids[rows], item_ids[present])


def _weekly(by_item: dd.DataFrame, enc: Encoded, as_of: pd.Timestamp) -> demand.WeeklyDemand:
    o = by_item
    buys = o[(o[ORDERED_AT] < as_of) & ~o[IS_RETURN] & (o[QUANTITY] > 0)]
    first_ts = buys[ORDERED_AT].min().compute()
    if pd.isna(first_ts):
        raise ValueError(f"no purchases before as_of={as_of.date()}")
    start = demand.first_full_week(pd.Timestamp(first_ts))
    end = demand.last_full_week(as_of)
    if end < start:
        raise ValueError(f"no complete week between {start.date()} and as_of={as_of.date()}")
    pieces = [p for p in _gather_objects(by_item, _demand_part, as_of, start, end) if p]
    codes = np.concatenate([p[0] for p in pieces])
    ids = enc.items.take(codes).astype(str).to_numpy()
    order = np.argsort(ids, kind="stable")
    units = np.vstack([p[1] for p in pieces])[order]
    price = np.vstack([p[2] for p in pieces])[order]
    weeks = pd.date_range(start, end, freq="7D")
    return demand.WeeklyDemand(pd.Index(ids[order], name=ITEM_ID), weeks, units, price)


# ---------------------------------------------------------------- entry point


def build_features(
    dataset: Dataset,
    as_of: pd.Timestamp | str | None = None,
    *,
    engine: Engine = "pandas",
    scheduler: str | None = None,
    client: Client | None = None,
    npartitions: int | None = None,
    **label_days: int,
) -> FeatureSet:
    """The feature set with the chosen engine: ``pandas`` (in process) or ``dask``.

    With ``dask``: ``client`` if given, else a client of ``scheduler`` (an address such as
    ``tcp://10.0.0.5:8786``), else a 2-worker LocalCluster for the duration of the call.
    """
    if engine == "pandas":
        return build_feature_set(dataset, as_of, **label_days)
    if engine != "dask":
        raise ValueError(f"unknown engine {engine!r}; use one of {', '.join(ENGINES)}")
    if client is not None:
        return build_feature_set_dask(dataset, as_of, client, npartitions=npartitions, **label_days)
    with dask_client(scheduler) as own:
        return build_feature_set_dask(dataset, as_of, own, npartitions=npartitions, **label_days)
