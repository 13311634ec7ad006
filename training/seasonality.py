"""The demand model's gift-season prior as one number per item: the expected log ratio of its
demand over a window ``[start, start + days)`` to its recent level.

The demand forecast (:mod:`training.demand`, module docstring point 2) multiplies an item's
recent level, ``h`` weeks after the origin week ``t``, by ``exp(r_i * phi_h)``: ``r_i >= 0`` is
what is left of the item's December log ratio (:func:`~training.demand.december_ratio`, pooled
over its name words and category, minus the lift already reached,
:func:`~training.demand.remaining_ramp`) and ``phi_h`` the share of it reached ``h`` weeks ahead
(:func:`~training.demand.season_phi`: the calendar ramp from 1 October to 15 December, or the
season's own measured pace, :func:`~training.demand.season_index`, when it runs ahead). The
strength is fixed at 1 there (no validation window before the autumn holds the season). This
module only composes those functions (it does not re-implement them), so the recommender and
the demand model share one prior; the demand model could build its ``ramp`` from
:func:`season_log_ratio` too.

Over a window, the expected demand relative to the recent level is the mean of the weekly
multipliers (each week weighted by its days inside the window), and its log is returned.
Everything is read from data strictly before the week ``t`` ends (no look-ahead): an origin in
May or June gives 0 unless the season index already rises, one in September the autumn ramp.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.demand import WeeklyDemand, last_full_week, weekly_demand
from features.schema import QUANTITY, UNIT_PRICE
from training.demand import (
    december_ratio,
    item_level,
    item_statics,
    remaining_ramp,
    season_phi,
)


def weekly_units(orders: pd.DataFrame, as_of: pd.Timestamp) -> WeeklyDemand | None:
    """Weekly units per item before ``as_of`` (:func:`features.demand.weekly_demand`); a table
    without quantities counts each line as one unit. None when no complete week exists."""
    if QUANTITY not in orders.columns or UNIT_PRICE not in orders.columns:
        orders = orders.assign(
            **{c: np.ones(len(orders)) for c in (QUANTITY, UNIT_PRICE) if c not in orders.columns}
        )
    try:
        return weekly_demand(orders, as_of)
    except ValueError:  # no purchase / no complete week before as_of
        return None


def window_weights(origin: pd.Timestamp, start: pd.Timestamp, days: int) -> np.ndarray:
    """Days of ``[start, start + days)`` in each week ``h = 1, 2, ...`` after the ``origin``
    week (week ``h`` covers the 7 days ending ``origin + 7 h``, Sunday 00:00 dates)."""
    end = start + pd.Timedelta(days=days)
    n = max(int(np.ceil((end - origin).days / 7)), 1)
    lo = np.array([origin + pd.Timedelta(days=7 * h - 6) for h in range(1, n + 1)])
    hi = np.array([origin + pd.Timedelta(days=7 * h + 1) for h in range(1, n + 1)])
    overlap = [
        max((min(b, end) - max(a, start)).total_seconds(), 0.0) / 86400
        for a, b in zip(lo, hi, strict=True)
    ]
    return np.asarray(overlap, dtype=float)


def season_log_ratio(
    wd: WeeklyDemand,
    start: pd.Timestamp,
    days: int,
    names: np.ndarray,
    categories: np.ndarray,
) -> np.ndarray:
    """Per item of ``wd``: log of its expected demand over ``[start, start + days)`` relative to
    its recent level, from the demand model's gift-season ramp (strength 1) at the last complete
    week before ``start``; 0 where the history has no December or the ramp has not started.
    ``names`` / ``categories`` are aligned with ``wd.items``."""
    n = len(wd.items)
    origin = last_full_week(pd.Timestamp(start))
    t = int(wd.weeks.searchsorted(origin, side="right")) - 1
    if n == 0 or t < 0 or days <= 0:
        return np.zeros(n)
    u = wd.units[:, : t + 1]  # nothing after the origin week is read
    statics = item_statics(u, names, categories)
    dec = december_ratio(u, wd.weeks, t, statics, item_level(u))
    left = np.maximum(remaining_ramp(u, wd.weeks, t, statics, dec), 0.0)
    weights = window_weights(wd.weeks[t], pd.Timestamp(start), days)
    phi = season_phi(u, wd.weeks, t, statics, dec, len(weights))
    if not (left > 0).any() or not (phi > 0).any():
        return np.zeros(n)
    ratio = np.exp(left[:, None] * phi[None, :]) @ (weights / weights.sum())
    return np.asarray(np.log(ratio))
