"""Items due for re-purchase: a customer's past items against each item's usual re-buy gap.

For every item, the *re-buy gap* is the number of days between two consecutive purchase days of
that item by the same customer; :func:`item_rebuy_gaps` sums their logarithms and counts them per
item (sums add up over disjoint sets of customers, like
:func:`features.users.item_statistics`, so a sample of customers can use the statistics of all).
An item's usual gap is the geometric mean of its gaps, shrunk towards the shop's overall
geometric mean with ``PRIOR_GAPS`` pseudo-gaps; items with fewer than ``MIN_GAPS`` observed gaps
have no usual gap.

Per customer (:func:`rebuy_features`), over the distinct items they bought, with ``ratio`` = days
since they last bought the item / the item's usual gap:

- ``items_due``: items with ``0.5 <= ratio < 1.5`` (due about now), ``items_due_share`` the same
  as a share of their items with a usual gap, ``items_overdue_share`` the share with
  ``ratio >= 1.5``;
- ``next_due_days``: the smallest ``|usual gap - days since|`` over their items (how close the
  nearest item is to being due), ``due_ratio_min`` the smallest ``ratio``;
- ``own_rebuy_share``: share of their items they bought on >= 2 days themselves;
  ``own_due_ratio``: the smallest (days since the last purchase / their own mean gap) over those.

Everything reads purchases strictly before ``as_of`` (a :class:`~features.purchases.Purchases`).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from features.purchases import Purchases
from features.schema import CUSTOMER_ID

#: Per-item statistics of :func:`item_rebuy_gaps` (additive over customers).
GAP_STAT_COLUMNS = ["gap_log_sum", "gaps"]
REBUY_COLUMNS = [
    "items_due",
    "items_due_share",
    "items_overdue_share",
    "next_due_days",
    "due_ratio_min",
    "own_rebuy_share",
    "own_due_ratio",
]
MIN_GAPS = 3  # an item needs this many observed re-buy gaps to have a usual gap
PRIOR_GAPS = 5.0  # pseudo-gaps at the overall geometric mean (shrinkage of rare items)
DUE = (0.5, 1.5)  # "due about now": days since / usual gap in [0.5, 1.5)


def _pair_days(p: Purchases) -> tuple[np.ndarray, np.ndarray]:
    """Per (customer, item, order) triple of ``p.chains``: its calendar day, and whether it is a
    new purchase day of the pair (the first triple of the pair, or a later day than the one
    before)."""
    ch = p.chains
    day = p.o_day[ch.order]
    new_day = np.ones(len(day), dtype=bool)
    new_day[1:] = (day[1:] != day[:-1]) | ch.new_pair[1:]
    return day, new_day


def item_rebuy_gaps(purchases: Purchases) -> pd.DataFrame:
    """Per item (index: the item id categories): ``gap_log_sum`` (sum of log re-buy gaps in days)
    and ``gaps`` (how many), over the customers in ``purchases``."""
    p = purchases
    ch = p.chains
    day, new_day = _pair_days(p)
    days_idx = np.flatnonzero(new_day)
    d, item, first = day[days_idx], ch.item[days_idx], ch.new_pair[days_idx]
    is_gap = ~first[1:]  # a purchase day after another one of the same pair
    gap = (d[1:] - d[:-1])[is_gap].astype(np.float64)
    gap_item = item[1:][is_gap]
    return pd.DataFrame(
        {
            "gap_log_sum": np.bincount(gap_item, weights=np.log(gap), minlength=p.n_items),
            "gaps": np.bincount(gap_item, minlength=p.n_items).astype(np.float64),
        },
        index=p.items,
    )


def usual_gaps(stats: pd.DataFrame, items: pd.Index) -> np.ndarray:
    """Each item's usual re-buy gap in days (NaN with fewer than ``MIN_GAPS`` gaps), for the
    items ``items`` (e.g. ``Purchases.items``), from :func:`item_rebuy_gaps` statistics."""
    st = stats.reindex(items, fill_value=0.0)
    # fsum: the exactly rounded sum, whatever the item order or the zero rows of items sold
    # only on/after as_of (a pairwise sum changed in the last bits with them)
    total = math.fsum(stats["gap_log_sum"].to_numpy(np.float64))
    n = float(stats["gaps"].sum())
    overall = total / n if n > 0 else 0.0
    s, k = st["gap_log_sum"].to_numpy(np.float64), st["gaps"].to_numpy(np.float64)
    gap = np.exp((s + PRIOR_GAPS * overall) / (k + PRIOR_GAPS))
    return np.where(k >= MIN_GAPS, gap, np.nan)


def _segment_min(values: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Min of ``values`` (NaN ignored) over the contiguous, non-empty segments starting at
    ``starts``; NaN for a segment without a value."""
    if not len(starts):
        return np.empty(0)
    out = np.minimum.reduceat(np.where(np.isnan(values), np.inf, values), starts)
    return np.where(np.isinf(out), np.nan, out)


def rebuy_features(purchases: Purchases, stats: pd.DataFrame | None = None) -> pd.DataFrame:
    """The :data:`REBUY_COLUMNS` of every customer with a purchase (index: customer id).

    ``stats``: :func:`item_rebuy_gaps` of all customers when ``purchases`` holds only some of
    them; by default those of ``purchases``.
    """
    p = purchases
    stats = item_rebuy_gaps(p) if stats is None else stats
    ch = p.chains
    start, end = ch.pair_start, ch.pair_end
    pair_c = ch.customer[start]
    since = p.o_age[ch.order[end]]  # days since the customer last bought the item
    gap = usual_gaps(stats, p.items)[ch.item[start]]
    ratio = since / gap
    known = ~np.isnan(gap)
    # per pair: purchase days and the customer's own mean gap
    day, new_day = _pair_days(p)
    pair_of_triple = np.cumsum(ch.new_pair) - 1
    n_days = np.bincount(pair_of_triple[new_day], minlength=len(start)).astype(np.float64)
    span = (day[end] - day[start]).astype(np.float64)
    own_gap = np.where(n_days >= 2, span / np.maximum(n_days - 1, 1), np.nan)
    # customers' segments of pairs (chains are sorted by customer)
    cust_start = np.flatnonzero(np.r_[True, pair_c[1:] != pair_c[:-1]]) if len(pair_c) else start
    custs = pair_c[cust_start]
    n_pairs = np.diff(np.r_[cust_start, len(pair_c)])

    def per_customer(weights: np.ndarray) -> np.ndarray:
        return np.add.reduceat(weights.astype(np.float64), cust_start) if len(pair_c) else weights

    n_known = per_customer(known)
    due = per_customer(known & (ratio >= DUE[0]) & (ratio < DUE[1]))
    overdue = per_customer(known & (ratio >= DUE[1]))
    with np.errstate(invalid="ignore", divide="ignore"):
        cols = {
            "items_due": due,
            "items_due_share": np.where(n_known > 0, due / n_known, np.nan),
            "items_overdue_share": np.where(n_known > 0, overdue / n_known, np.nan),
            "next_due_days": _segment_min(np.abs(gap - since), cust_start),
            "due_ratio_min": _segment_min(ratio, cust_start),
            "own_rebuy_share": per_customer(n_days >= 2) / n_pairs,
            "own_due_ratio": _segment_min(since / own_gap, cust_start),
        }
    return pd.DataFrame(cols, index=pd.Index(p.customers[custs], name=CUSTOMER_ID))[REBUY_COLUMNS]
