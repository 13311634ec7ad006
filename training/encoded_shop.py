"""Purchases as integer codes: the one encoding of a shop every recommender snapshot is cut from.

:func:`encode_shop` reads the purchase lines before ``as_of`` (returns dropped) once and keeps
one line per (order, item) as integer codes plus the item / customer lookups (:class:`Shop`);
snapshots, label windows and validation sets are then masks on these arrays
(:meth:`Shop.window`, :meth:`Shop.truth`) without touching string columns again.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from features.arrays import id_codes
from features.purchases import as_timestamp
from features.schema import (
    CATEGORY,
    COUNTRY,
    CUSTOMER_ID,
    IS_RETURN,
    ITEM_ID,
    ITEM_NAME,
    ORDER_ID,
    ORDERED_AT,
)

US_PER_DAY = 86_400_000_000


@dataclass(frozen=True)
class Shop:
    """Purchases before ``as_of`` as integer codes (one row per distinct order x item) + lookups.

    Encoded once per fit so that every snapshot, label window and validation set is cut from
    the same arrays without touching string columns again.
    """

    user: np.ndarray  # code into user_ids
    item: np.ndarray  # code into item_ids
    order: np.ndarray  # order code
    time: np.ndarray  # int64 microseconds since the epoch
    user_ids: np.ndarray  # sorted strings
    item_ids: np.ndarray  # sorted strings
    user_country: np.ndarray  # code into countries per user code, -1 unknown
    countries: np.ndarray
    item_names: np.ndarray
    item_categories: np.ndarray

    def window(self, start: pd.Timestamp | None, end: pd.Timestamp) -> np.ndarray:
        """Boolean mask of lines with ``start <= ordered_at < end``."""
        mask = self.time < epoch_us(end)
        if start is not None:
            mask &= self.time >= epoch_us(start)
        return mask

    def truth(self, start: pd.Timestamp, days: int, users: np.ndarray) -> sp.csr_matrix:
        """Binary ``len(users) x items``: what each user code bought in ``[start, start + days)``."""
        sel = self.window(start, start + pd.Timedelta(days=days))
        lookup = np.full(len(self.user_ids), -1, dtype=np.int64)
        lookup[users] = np.arange(len(users))
        r = lookup[self.user[sel]]
        ok = r >= 0
        m = sp.csr_matrix(
            (np.ones(int(ok.sum()), dtype=np.float32), (r[ok], self.item[sel][ok])),
            shape=(len(users), len(self.item_ids)),
        )
        m.sum_duplicates()
        m.data[:] = 1.0
        return m


def epoch_us(when: pd.Timestamp) -> int:
    """``when`` in microseconds since the epoch (the unit of :attr:`Shop.time`)."""
    return int(pd.Timestamp(when).value // 1000)  # .value is in nanoseconds


def purchase_mask(orders: pd.DataFrame, as_of: pd.Timestamp | str | None = None) -> np.ndarray:
    """Boolean mask of purchase lines (not returns) before ``as_of`` (all when None)."""
    mask = np.ones(len(orders), dtype=bool)
    if IS_RETURN in orders.columns:
        mask &= ~orders[IS_RETURN].to_numpy(dtype=bool)
    if as_of is not None:
        mask &= (orders[ORDERED_AT] < as_timestamp(as_of)).to_numpy()
    return mask


def encode_shop(
    orders: pd.DataFrame,
    items: pd.DataFrame | None = None,
    customers: pd.DataFrame | None = None,
    as_of: pd.Timestamp | str | None = None,
) -> Shop:
    """Encode purchase lines before ``as_of`` (all when None; returns dropped) and the item /
    customer metadata. Reads the four columns it needs one at a time (no copy of the table)."""
    mask = purchase_mask(orders, as_of)
    u, user_ids = id_codes(orders[CUSTOMER_ID][mask], None)
    i, item_ids = id_codes(orders[ITEM_ID][mask], None)
    order_col = orders[ORDER_ID][mask]
    if isinstance(order_col.dtype, pd.CategoricalDtype):
        o = order_col.cat.codes.to_numpy().astype(np.int64)
    elif order_col.dtype == object:
        o = pd.factorize(order_col.astype(str).to_numpy())[0].astype(np.int64)
    else:
        o = pd.factorize(order_col)[0].astype(np.int64)
    del order_col
    t = orders[ORDERED_AT][mask].to_numpy().astype("datetime64[us]").astype(np.int64)
    ok = (u >= 0) & (i >= 0) & (o >= 0)
    u, i, o, t = u[ok], i[ok], o[ok], t[ok]
    # one line per (order, item), its earliest time
    key = o * max(len(item_ids), 1) + i
    first = np.lexsort((t, key))
    key = key[first]
    keep = first[np.r_[True, key[1:] != key[:-1]]] if len(key) else first
    keep.sort()
    countries = np.array([], dtype="<U1")
    user_country = np.full(len(user_ids), -1, dtype=np.int64)
    if customers is not None and COUNTRY in customers.columns and len(user_ids):
        c = customers.assign(_id=customers[CUSTOMER_ID].astype(str)).drop_duplicates("_id")
        per_user = c.set_index("_id")[COUNTRY].reindex(user_ids).fillna("").astype(str)
        per_user_arr = per_user.to_numpy().astype(str)
        countries = np.unique(per_user_arr[per_user_arr != ""])
        if len(countries):
            user_country = np.where(
                per_user_arr != "", np.searchsorted(countries, per_user_arr), -1
            ).astype(np.int64)
    names = np.full(len(item_ids), "", dtype=object)
    cats = np.full(len(item_ids), "", dtype=object)
    if items is not None and len(items):
        meta = items.assign(_id=items[ITEM_ID].astype(str)).drop_duplicates("_id").set_index("_id")
        if ITEM_NAME in meta.columns:
            names = meta[ITEM_NAME].reindex(item_ids).fillna("").astype(str).to_numpy()
        if CATEGORY in meta.columns:
            cats = meta[CATEGORY].reindex(item_ids).fillna("").astype(str).to_numpy()
    return Shop(
        user=u[keep],
        item=i[keep],
        order=o[keep],
        time=t[keep],
        user_ids=np.asarray(user_ids, dtype=str),
        item_ids=np.asarray(item_ids, dtype=str),
        user_country=user_country,
        countries=countries,
        item_names=_text(names),
        item_categories=_text(cats),
    )


def _text(values: np.ndarray) -> np.ndarray:
    arr = np.asarray(values, dtype=str)
    return arr if arr.size else np.array([], dtype="<U1")
