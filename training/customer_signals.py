"""Customer-model signals of what customers buy and when, measured on validation and NOT used.

No model reads these columns: they were measured as extra LightGBM features (beside the default
snapshot columns) on the protocol-C validation replays (no test label read) and none improved
both data sets. Paired change of the served model's AUC on the replay's own window, all four
columns together: Online Retail +0.0007 mean over 8 replays (better on 4: churn90 at 2011-06-01
+0.0027, 05-16 -0.0004; repurchase30 at 08-01 +0.0003, 07-16 -0.0005, 07-01 -0.0011, 06-16
+0.0017, 06-01 +0.0034, 05-01 -0.0008), Brier +0.00017; CDNOW -0.0006 mean over 5 (better on 1;
1997-09-01 repurchase30 -0.0023). ``seasonal_item_share`` alone on Online Retail -0.0003 (3 of 8
better), ``item_retention90`` alone +0.0004 (4 of 8); on the two churn90 replays
``own_repeat_share`` +0.0006/+0.0006 and ``q4_spend_share`` +0.0015/-0.0011. Features that
already cover the rest of the list in BENCHMARKS.md live in :mod:`features.users` (season and
Q4 order shares, orders in the same window last year, returns, item retention over 30 days,
country share) and :mod:`features.momentum`. Kept so the measurement can be repeated
(``customer_signals`` on a :class:`~features.purchases.Purchases`, joined to the snapshots).

Per customer with a purchase before ``as_of`` (a :class:`~features.purchases.Purchases`):

- ``seasonal_item_share``: mean over their purchase lines of the item's share of lines placed in
  Oct-Dec (the gift season), leaving the line itself out, shrunk to the shop's share;
- ``item_retention90``: mean over their purchase lines of the share of the item's *other*
  lines (orders older than 90 days, outcome known before ``as_of``) whose customer ordered
  again within 90 days, shrunk to the shop's share;
- ``own_repeat_share``: share of their distinct items bought in >= 2 orders;
- ``q4_spend_share``: share of their spend placed in Oct-Dec.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.arrays import counts, safe_div
from features.purchases import Purchases
from features.schema import CUSTOMER_ID

SIGNAL_COLUMNS = ["seasonal_item_share", "item_retention90", "own_repeat_share", "q4_spend_share"]
PRIOR_LINES = 20.0


def _loo_share(
    hits: np.ndarray, total: np.ndarray, item: np.ndarray, own_hit: np.ndarray, own: np.ndarray
) -> np.ndarray:
    """Per line, the item's smoothed share ``hits / total`` without the line itself."""
    overall = float(hits.sum()) / float(total.sum()) if total.sum() > 0 else 0.0
    return (hits[item] - own_hit + PRIOR_LINES * overall) / (total[item] - own + PRIOR_LINES)


def customer_signals(p: Purchases) -> pd.DataFrame:
    """:data:`SIGNAL_COLUMNS` of every customer with a purchase (index: customer id)."""
    n = p.n_customers
    o_c = p.o_customer
    month = p.o_when.astype("datetime64[M]").astype(np.int64) % 12 + 1
    o_q4 = month >= 10
    line_order = p.line_order
    item = p.item
    line_c = o_c[line_order]
    n_lines = counts(line_c, None, n)
    # seasonal items
    line_q4 = o_q4[line_order].astype(np.float64)
    q4_hits = np.bincount(item, weights=line_q4, minlength=p.n_items)
    all_lines = np.bincount(item, minlength=p.n_items).astype(np.float64)
    seasonal = _loo_share(q4_hits, all_lines, item, line_q4, np.ones(len(item)))
    feats = {"seasonal_item_share": safe_div(counts(line_c, seasonal, n), n_lines)}
    # item retention over 90 days (orders whose 90-day outcome is known before as_of)
    seq = p.by_customer
    s_c = o_c[seq]
    s_age = p.o_age[seq]
    again = (s_c[1:] == s_c[:-1]) & (s_age[:-1] - s_age[1:] <= 90.0)
    came_back = np.zeros(p.n_orders, dtype=bool)
    came_back[seq[:-1]] = again
    known = p.o_age > 90.0
    line_known = known[line_order].astype(np.float64)
    line_hit = (came_back & known)[line_order].astype(np.float64)
    ret_hits = np.bincount(item, weights=line_hit, minlength=p.n_items)
    ret_lines = np.bincount(item, weights=line_known, minlength=p.n_items)
    ret = _loo_share(ret_hits, ret_lines, item, line_hit, line_known)
    feats["item_retention90"] = safe_div(counts(line_c, ret, n), n_lines)
    # own repeat items
    ch = p.chains
    repeat = (ch.pair_end > ch.pair_start).astype(np.float64)
    pairs = counts(ch.pair_customer, None, n)
    feats["own_repeat_share"] = safe_div(counts(ch.pair_customer, repeat, n), pairs)
    # spend in the gift season
    value = p.order_values()
    feats["q4_spend_share"] = safe_div(counts(o_c[o_q4], value[o_q4], n), counts(o_c, value, n))
    present = counts(o_c, None, n) > 0
    frame = pd.DataFrame(feats, index=pd.Index(p.customers, name=CUSTOMER_ID))
    return frame.loc[present, SIGNAL_COLUMNS]
