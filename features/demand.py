"""Weekly demand series per item, with calendar and price covariates.

Pure functions of ``(orders, as_of)``: only order lines strictly before ``as_of`` are used. Weeks
end on Sunday (a week is labelled by the date of its Sunday); a week is in the history only when
it is complete before ``as_of`` and starts on or after the first order day (so a partial first
week is dropped). Weeks without sales are 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from features.arrays import id_codes
from features.purchases import as_timestamp
from features.schema import IS_RETURN, ITEM_ID, ORDERED_AT, QUANTITY, UNIT_PRICE

WEEK = pd.Timedelta(days=7)
DAY = pd.Timedelta(days=1)


def week_ending(ts: pd.Series | pd.DatetimeIndex | np.ndarray) -> pd.Series:
    """The Sunday (00:00) that ends the week of each timestamp."""
    s = pd.Series(pd.to_datetime(ts)).dt.normalize()
    return s + pd.to_timedelta((6 - s.dt.day_of_week) % 7, unit="D")


def _week_ending(when: np.ndarray) -> np.ndarray:
    """:func:`week_ending` of a datetime64 array, in NumPy (days; 1970-01-01 was a Thursday)."""
    day = when.astype("datetime64[D]")
    weekday = (day.astype(np.int64) + 3) % 7  # 0 = Monday
    return day + (6 - weekday).astype("timedelta64[D]")


def last_full_week(as_of: pd.Timestamp) -> pd.Timestamp:
    """The last Sunday whose whole week lies before ``as_of``."""
    day = as_timestamp(as_of).normalize() - DAY  # the last complete day
    return day - pd.Timedelta(days=(day.day_of_week - 6) % 7)


def first_full_week(first_day: pd.Timestamp) -> pd.Timestamp:
    """The first Sunday whose week (Monday..Sunday) starts on or after ``first_day``."""
    first_day = pd.Timestamp(first_day).normalize()
    monday = first_day + pd.Timedelta(days=(7 - first_day.day_of_week) % 7)
    return monday + pd.Timedelta(days=6)


@dataclass(frozen=True)
class WeeklyDemand:
    """Weekly units (``units[i, t]``) and mean unit prices (``price[i, t]``, forward-filled).

    ``items`` labels the rows, ``weeks`` (Sunday dates) the columns. ``price`` is NaN before an
    item's first sale.
    """

    items: pd.Index
    weeks: pd.DatetimeIndex
    units: np.ndarray
    price: np.ndarray

    def frame(self) -> pd.DataFrame:
        """Units as a DataFrame (items x weeks)."""
        return pd.DataFrame(self.units, index=self.items, columns=self.weeks)


def weekly_demand(
    orders: pd.DataFrame,
    as_of: pd.Timestamp | str,
    *,
    start: pd.Timestamp | str | None = None,
    end: pd.Timestamp | str | None = None,
    item_col: str = ITEM_ID,
    time_col: str = ORDERED_AT,
    qty_col: str = QUANTITY,
    price_col: str = UNIT_PRICE,
    return_col: str = IS_RETURN,
) -> WeeklyDemand:
    """Weekly units sold per item from purchase lines strictly before ``as_of``.

    ``start`` (a Sunday) defaults to the first full week of the data; ``end`` (a Sunday) defaults
    to the last full week before ``as_of``. Return lines (``return_col`` true) and lines with
    quantity <= 0 are ignored.
    """
    as_of = as_timestamp(as_of)
    keep = (orders[time_col] < as_of).to_numpy() & (orders[qty_col].to_numpy() > 0)
    if return_col in orders.columns:
        keep &= ~orders[return_col].to_numpy(dtype=bool)
    if not keep.any():
        raise ValueError(f"no purchases before as_of={as_of.date()}")
    # NumPy arrays of the kept lines only (no frame copies): the week of each line
    when = orders[time_col].to_numpy()[keep]
    wk = _week_ending(when) if when.dtype.kind == "M" else week_ending(when).to_numpy()
    first = first_full_week(when.min()) if start is None else pd.Timestamp(start)
    del when
    last = last_full_week(as_of) if end is None else pd.Timestamp(end)
    if last < first:
        raise ValueError(f"no complete week between {first.date()} and as_of={as_of.date()}")
    weeks = pd.date_range(first, last, freq="7D")
    in_range = (wk >= weeks[0].to_datetime64()) & (wk <= weeks[-1].to_datetime64())
    keep[keep] = in_range  # the purchase lines of the complete weeks
    t = (wk[in_range] - weeks[0].to_datetime64()) // np.timedelta64(7, "D")
    del wk, in_range
    m = len(weeks)
    i, item_ids = id_codes(pd.Series(orders[item_col].array[keep]), None)
    items = pd.Index(item_ids, name=item_col)
    n = len(items)
    cell = i * m
    cell += t
    del i, t
    qty = orders[qty_col].to_numpy(dtype=float)[keep]
    units = np.bincount(cell, qty, minlength=n * m).reshape(n, m)
    qty *= orders[price_col].to_numpy(dtype=float)[keep]  # line revenue
    revenue = np.bincount(cell, qty, minlength=n * m)
    revenue = revenue.reshape(n, m)
    with np.errstate(invalid="ignore", divide="ignore"):
        price = np.where(units > 0, revenue / units, np.nan)
    price = pd.DataFrame(price.T).ffill().to_numpy().T
    return WeeklyDemand(items, weeks, units, price)


def active_items(units: np.ndarray, min_weeks: int = 10) -> np.ndarray:
    """Boolean mask of rows with sales in at least ``min_weeks`` weeks."""
    return np.asarray((units > 0).sum(axis=1) >= min_weeks)


def calendar_features(weeks: pd.DatetimeIndex) -> pd.DataFrame:
    """Calendar covariates of week-ending dates: ISO week, month, weeks to Christmas, season."""
    weeks = pd.DatetimeIndex(weeks)
    woy = weeks.isocalendar().week.to_numpy().astype(float)
    xmas = pd.DatetimeIndex([pd.Timestamp(year=d.year, month=12, day=25) for d in weeks])
    to_xmas = np.asarray((xmas - weeks).days, dtype=float) / 7.0
    to_xmas = np.where(to_xmas < -1, to_xmas + 52.18, to_xmas)  # after Christmas: next one
    return pd.DataFrame(
        {
            "week_of_year": woy,
            "month": weeks.month.to_numpy().astype(float),
            "weeks_to_xmas": to_xmas,
            "sin_year": np.sin(2 * np.pi * woy / 52.18),
            "cos_year": np.cos(2 * np.pi * woy / 52.18),
        },
        index=weeks,
    )


def week_ahead(
    orders: pd.DataFrame,
    as_of: pd.Timestamp | str,
    *,
    weeks: int = 26,
    time_col: str = ORDERED_AT,
    qty_col: str = QUANTITY,
    return_col: str = IS_RETURN,
) -> tuple[float, float]:
    """``(share, span)`` of the week that contains ``as_of`` still ahead of it.

    ``span``: the calendar share of that week (Monday to Sunday) from ``as_of`` on (1 when
    ``as_of`` is a Monday 00:00, 2/7 on a Saturday 00:00). ``share``: the share of a week's units
    the shop sells in that remaining time, from its weekday profile (units per weekday over the
    ``weeks`` complete weeks before ``as_of``; the as_of day counted for the part of it ahead):
    on a shop closed on Saturdays, a Saturday as_of leaves only Sunday's share. Exactly (1, 1)
    when the week lies wholly ahead; ``span`` when the history shows no sales.
    """
    as_of = as_timestamp(as_of)
    monday = last_full_week(as_of) + DAY
    span = (monday + WEEK - as_of) / WEEK
    if span >= 1.0:
        return 1.0, 1.0
    start = monday - weeks * WEEK
    when = orders[time_col]
    keep = ((when >= start) & (when < monday)).to_numpy() & (orders[qty_col].to_numpy() > 0)
    if return_col in orders.columns:
        keep &= ~orders[return_col].to_numpy(dtype=bool)
    day = pd.DatetimeIndex(when.to_numpy()[keep]).day_of_week.to_numpy()
    by_day = np.bincount(day, weights=orders[qty_col].to_numpy(dtype=float)[keep], minlength=7)
    total = by_day.sum()
    if total <= 0:
        return float(span), float(span)
    dow = as_of.day_of_week
    left_today = 1.0 - (as_of - as_of.normalize()) / DAY
    share = (by_day[dow] * left_today + by_day[dow + 1 :].sum()) / total
    return float(share), float(span)
