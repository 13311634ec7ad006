"""User x item interactions as sparse matrices with stable id maps (point in time, pure).

Every function here is a pure function of ``(orders, as_of)``: only purchase lines (not returns)
strictly before ``as_of`` are used, so rows on or after ``as_of`` never change the result.
Weighting schemes that need fitted statistics (bm25, tf-idf) belong to training.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from features.arrays import code_counts, id_codes
from features.purchases import Purchases, as_timestamp
from features.schema import CUSTOMER_ID, IS_RETURN, ITEM_ID, ORDER_ID, ORDERED_AT, QUANTITY

WEIGHTS = ("orders", "quantity", "binary")


@dataclass(frozen=True)
class Interactions:
    """A user x item CSR matrix with its row (user) and column (item) id maps.

    ``user_ids[i]`` is the customer id of row ``i``; ``item_ids[j]`` the item id of column ``j``.
    Ids are strings sorted in lexicographic order, so the maps are stable for the same input.
    """

    matrix: sp.csr_matrix
    user_ids: np.ndarray
    item_ids: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self.user_ids), len(self.item_ids))

    def user_index(self) -> dict[str, int]:
        """Customer id -> row number."""
        return {u: i for i, u in enumerate(self.user_ids.tolist())}

    def item_index(self) -> dict[str, int]:
        """Item id -> column number."""
        return {t: j for j, t in enumerate(self.item_ids.tolist())}


def purchases_before(
    orders: pd.DataFrame,
    as_of: pd.Timestamp | str | None,
    since: pd.Timestamp | str | None = None,
    *,
    ordered_at: str = ORDERED_AT,
    is_return: str = IS_RETURN,
) -> pd.DataFrame:
    """Purchase lines (not returns) with ``since <= ordered_at < as_of`` (either bound optional)."""
    mask = np.ones(len(orders), dtype=bool)
    if is_return in orders.columns:
        mask &= ~orders[is_return].to_numpy(dtype=bool)
    times = orders[ordered_at]
    if as_of is not None:
        mask &= (times < as_timestamp(as_of)).to_numpy()
    if since is not None:
        mask &= (times >= as_timestamp(since)).to_numpy()
    return orders[mask]


def build_interactions(
    orders: pd.DataFrame,
    as_of: pd.Timestamp | str | None,
    *,
    since: pd.Timestamp | str | None = None,
    weight: str = "orders",
    user_ids: np.ndarray | None = None,
    item_ids: np.ndarray | None = None,
    customer_id: str = CUSTOMER_ID,
    item_id: str = ITEM_ID,
    order_id: str = ORDER_ID,
    quantity: str = QUANTITY,
    purchases: Purchases | None = None,
) -> Interactions:
    """User x item matrix from purchases in ``[since, as_of)``.

    ``weight``: ``orders`` = number of distinct orders containing the item (the default),
    ``quantity`` = units bought, ``binary`` = 1 if ever bought. ``user_ids``/``item_ids`` fix
    the id maps (sorted string arrays, e.g. from an earlier call); rows outside them are dropped.
    ``purchases``: the :class:`~features.purchases.Purchases` of ``orders`` at ``as_of``; the
    default matrix (all history, ``orders`` weight, contract column names) is then read from
    their customer-item chains instead of sorting the lines again.
    """
    if weight not in WEIGHTS:
        raise ValueError(f"unknown weight {weight!r}; use one of {', '.join(WEIGHTS)}")
    default_columns = (customer_id, item_id, order_id) == (CUSTOMER_ID, ITEM_ID, ORDER_ID)
    if (
        weight == "orders"
        and since is None
        and user_ids is None
        and item_ids is None
        and default_columns
        and as_of is not None
        and IS_RETURN in orders
    ):
        return _from_chains(purchases if purchases is not None else Purchases.of(orders, as_of))
    rows = purchases_before(orders, as_of, since)
    if user_ids is not None:
        user_ids = np.asarray(user_ids, dtype=str)
    if item_ids is not None:
        item_ids = np.asarray(item_ids, dtype=str)
    u, user_ids = id_codes(rows[customer_id], user_ids)
    i, item_ids = id_codes(rows[item_id], item_ids)
    keep = (u >= 0) & (i >= 0)
    u, i = u[keep], i[keep]
    shape = (len(user_ids), len(item_ids))
    if weight == "quantity":
        vals = rows[quantity].to_numpy(dtype=np.float64)[keep]
        m = sp.csr_matrix((vals, (u, i)), shape=shape)
    else:
        # one entry per distinct (order, item): an order belongs to one user
        order = rows[order_id]
        if isinstance(order.dtype, pd.CategoricalDtype):
            o = order.cat.codes.to_numpy().astype(np.int64)[keep]
        else:
            o = pd.factorize(order.astype(str).to_numpy()[keep])[0].astype(np.int64)
        key = o * shape[1] + i
        idx = np.argsort(key, kind="stable")
        k = key[idx]
        pick = idx[np.r_[True, k[1:] != k[:-1]]] if len(k) else idx
        m = sp.csr_matrix((np.ones(len(pick)), (u[pick], i[pick])), shape=shape)
        if weight == "binary":
            m.data[:] = 1.0
    m.sum_duplicates()
    m.sort_indices()
    return Interactions(m.astype(np.float32).tocsr(), user_ids, item_ids)


def _from_chains(p: Purchases) -> Interactions:
    """The default matrix: distinct orders per (customer, item) pair of the purchase chains."""
    chains = p.chains
    start, end = chains.pair_start, chains.pair_end
    rows, user_ids = _sorted_ids(p.customers, chains.pair_customer)
    cols, item_ids = _sorted_ids(p.items, chains.item[start])
    values = end - start  # orders per pair - 1
    data = np.add(values, 1, dtype=np.float32)  # whole numbers of orders: exact in float32
    del values
    m = sp.csr_matrix((data, (rows, cols)), shape=(len(user_ids), len(item_ids)))
    del data, rows, cols
    m.sum_duplicates()  # pairs are distinct: sorts each row's columns
    m.sort_indices()
    return Interactions(m, user_ids, item_ids)


def _sorted_ids(categories: pd.Index, codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positions of ``codes`` among the used ids sorted as strings, and those ids."""
    used = code_counts(codes, len(categories)) > 0
    names = np.asarray(categories.astype(str).to_numpy()[used], dtype=str)
    order = np.argsort(names, kind="stable")
    position = np.full(len(categories), -1, dtype=np.int32 if len(order) < 2**31 else np.int64)
    position[np.flatnonzero(used)[order]] = np.arange(len(order))
    return position[codes], names[order]


def user_item_stats(
    orders: pd.DataFrame,
    as_of: pd.Timestamp | str,
    *,
    customer_id: str = CUSTOMER_ID,
    item_id: str = ITEM_ID,
    order_id: str = ORDER_ID,
    ordered_at: str = ORDERED_AT,
    quantity: str = QUANTITY,
) -> pd.DataFrame:
    """One row per (customer, item) bought before ``as_of``.

    Columns: customer_id, item_id (strings), ``n_orders`` (distinct orders), ``units``,
    ``first_at``, ``last_at`` (timestamps of the first and last order with the item).
    """
    rows = purchases_before(orders, as_of)
    frame = pd.DataFrame(
        {
            customer_id: rows[customer_id].astype(str).to_numpy(),
            item_id: rows[item_id].astype(str).to_numpy(),
            order_id: rows[order_id].astype(str).to_numpy(),
            ordered_at: rows[ordered_at].to_numpy(),
            quantity: rows[quantity].to_numpy(dtype=np.float64),
        }
    )
    grouped = frame.groupby([customer_id, item_id], sort=True, observed=True)
    out = grouped.agg(
        n_orders=(order_id, "nunique"),
        units=(quantity, "sum"),
        first_at=(ordered_at, "min"),
        last_at=(ordered_at, "max"),
    )
    return out.reset_index()
