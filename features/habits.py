"""Ordering habits the user features do not have: weekday and hour regularity, the last basket
against the usual one, and how long ago the last return was.

Per customer with a purchase before ``as_of`` (a :class:`~features.purchases.Purchases`):

- ``weekday_mode_share``: share of their orders placed on their most frequent weekday (1.0 for
  a customer who always orders on the same weekday);
- ``hour_std``: standard deviation of the hour of day of their orders;
- ``last_value_ratio`` / ``last_lines_ratio``: value / number of lines of the last order over
  their mean (a shrinking basket < 1);
- ``days_since_return``: days since their last return line before ``as_of`` (NaN: none).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.purchases import DAY, Purchases
from features.schema import CUSTOMER_ID, ORDERED_AT

HABIT_COLUMNS = [
    "weekday_mode_share",
    "hour_std",
    "last_value_ratio",
    "last_lines_ratio",
    "days_since_return",
]


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def habit_features(purchases: Purchases) -> pd.DataFrame:
    """The :data:`HABIT_COLUMNS` of every customer with a purchase (index: customer id)."""
    p = purchases
    n, o_c = p.n_customers, p.o_customer
    n_orders = np.bincount(o_c, minlength=n).astype(np.float64)
    present = n_orders > 0
    when = p.o_when.astype("datetime64[us]", copy=False)
    days = when.astype("datetime64[D]")
    weekday = (days.astype(np.int64) + 3) % 7  # 0 = Monday
    per_day = np.bincount(o_c.astype(np.int64) * 7 + weekday, minlength=n * 7).reshape(n, 7)
    hour = (when - days) / np.timedelta64(1, "h")
    mean_h = _ratio(np.bincount(o_c, weights=hour, minlength=n), n_orders)
    var_h = _ratio(np.bincount(o_c, weights=hour**2, minlength=n), n_orders) - mean_h**2
    value, lines = p.order_values(), p.order_lines()
    seq = p.by_customer  # each customer's orders, oldest first
    s_c = o_c[seq]
    last = seq[np.r_[s_c[1:] != s_c[:-1], True]] if len(seq) else seq
    last_value, last_lines = np.full(n, np.nan), np.full(n, np.nan)
    last_value[o_c[last]], last_lines[o_c[last]] = value[last], lines[last]
    cols = {
        "weekday_mode_share": _ratio(per_day.max(axis=1).astype(np.float64), n_orders),
        "hour_std": np.sqrt(np.clip(var_h, 0.0, None)),
        "last_value_ratio": _ratio(last_value, _ratio(np.bincount(o_c, value, n), n_orders)),
        "last_lines_ratio": _ratio(last_lines, _ratio(np.bincount(o_c, lines, n), n_orders)),
        "days_since_return": _days_since_return(p),
    }
    frame = pd.DataFrame(cols, index=pd.Index(p.customers, name=CUSTOMER_ID))
    return frame.loc[present, HABIT_COLUMNS]


def _days_since_return(p: Purchases) -> np.ndarray:
    """Days from each customer's last return line before ``as_of`` to ``as_of`` (NaN: none)."""
    out = np.full(p.n_customers, np.inf)
    c = p.customer_all[p.ret]
    age = (np.datetime64(p.as_of) - p.orders[ORDERED_AT].to_numpy()[p.ret]) / DAY  # type: ignore[operator]
    ok = c >= 0
    np.minimum.at(out, c[ok], np.asarray(age, dtype=np.float64)[ok])
    return np.where(np.isinf(out), np.nan, out)
