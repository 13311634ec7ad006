"""Planner maths on weekly demand quantiles: reorder point, safety stock, stock-out risk, cover.

Pure numpy/scipy, no I/O. All functions take per-item arrays of weekly P10/P50/P90 of shape
(n_items, weeks) and broadcast per-item parameters.

Distributional assumption (documented here once, used everywhere):

1. Each week's demand has mean ``0.3 P10 + 0.4 P50 + 0.3 P90`` (Pearson-Tukey) and standard
   deviation ``(P90 - P10) / 2.563`` (the P10-P90 width of a normal).
2. Weeks are independent, so demand over a span of ``x`` weeks (fractional spans take the matching
   share of the last week; spans beyond the forecast table repeat its last week) has the summed
   mean and variance. Spans start at ``as_of``: when it falls mid-week, the table's first week
   holds only the demand still ahead in that week (see :mod:`training.demand`) and lasts
   ``first_week_span`` of a week (2/7 from a Saturday), so a lead time of 2 weeks covers the rest
   of this week, next week and 5/7 of the week after.
3. Demand over a span is Gamma-distributed with that mean and variance (non-negative and
   right-skewed like intermittent shop demand); with variance 0 it is the constant mean.

Policy: periodic review every ``review_period`` weeks with lead time ``lead_time`` weeks.
- ``reorder_point`` = the ``service_level`` quantile of demand over the lead time (order when the
  inventory position, on hand + on order, falls to it);
- ``order_up_to`` = the ``service_level`` quantile of demand over lead time + review period;
- ``safety_stock`` = ``order_up_to`` - expected demand over lead time + review period (equals
  reorder point - expected lead-time demand when ``review_period`` is 0);
- ``p_stockout`` = P(demand over the lead time > inventory position): the chance of running out
  before an order placed now can arrive;
- ``weeks_of_cover`` = weeks until cumulative expected demand reaches the inventory position.
"""

from __future__ import annotations

import numpy as np
from scipy import stats

Z90 = 1.2815515655446004  # standard normal 0.9 quantile; P90 - P10 = 2 * Z90 * sd


def _arr(x: np.ndarray | float, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=float)
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{name} must be finite numbers")
    return a


def weekly_moments(
    p10: np.ndarray, p50: np.ndarray, p90: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance of each week's demand from its quantiles (sorted, clipped at 0)."""
    q = np.sort(np.stack([_arr(p10, "p10"), _arr(p50, "p50"), _arr(p90, "p90")]), axis=0)
    q = np.maximum(q, 0.0)
    mean = 0.3 * q[0] + 0.4 * q[1] + 0.3 * q[2]
    sd = (q[2] - q[0]) / (2 * Z90)
    return mean, sd**2


def week_starts(available: int, first_week_span: float = 1.0) -> np.ndarray:
    """Start (weeks after ``as_of``) and length of each table week: (2, available)."""
    length = np.ones(available)
    length[0] = first_week_span
    return np.stack([np.concatenate([[0.0], np.cumsum(length)[:-1]]), length])


def span_weights(
    weeks: np.ndarray | float, available: int, first_week_span: float = 1.0
) -> np.ndarray:
    """Weights (n, available) of weeks 1..available covered by a span of ``weeks`` (per item)
    counted from ``as_of`` (the first table week lasts ``first_week_span`` of a week).

    The last table week absorbs any span beyond the table (its values repeat).
    """
    w = np.atleast_1d(_arr(weeks, "span"))[:, None]
    start, length = week_starts(available, first_week_span)
    cover = np.clip((w - start[None, :]) / length[None, :], 0.0, 1.0)
    cover[:, -1] = np.maximum((w[:, 0] - start[-1]) / length[-1], 0.0)
    return np.asarray(cover)


def span_moments(
    mean: np.ndarray, var: np.ndarray, weeks: np.ndarray | float, first_week_span: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance of demand over ``weeks`` (independent weeks; fractional spans prorated)."""
    mean, var = np.atleast_2d(mean), np.atleast_2d(var)
    w = span_weights(np.broadcast_to(weeks, (mean.shape[0],)), mean.shape[1], first_week_span)
    # a fraction f of a week: mean f*m, variance f*v (sum of f independent "sub-weeks")
    return (w * mean).sum(axis=1), (w * var).sum(axis=1)


#: Tail point, in Gamma scale units beyond ``shape + TAIL_SDS * sqrt(shape)``, past which a
#: Gamma's survival function and expected shortfall are 0 in float64 (every shape).
TAIL_SDS, TAIL_OFFSET = 40.0, 2000.0


def _gamma(mean: np.ndarray, var: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(ok, shape, scale)`` of the Gamma with this mean and variance; ``ok`` is False where it
    degenerates (var = 0 or mean = 0) and the shape/scale there are placeholders (1.0)."""
    ok = (var > 0) & (mean > 0)
    shape = np.where(ok, mean**2 / np.where(ok, var, 1.0), 1.0)
    scale = np.where(ok, var / np.where(mean > 0, mean, 1.0), 1.0)
    return ok, shape, scale


def _in_tail_range(x: np.ndarray, shape: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """``x`` capped at a point where the Gamma tail is already 0 (the same probabilities and
    shortfalls): scipy's ``x / scale`` overflows for huge finite stock such as 1e308."""
    cap = scale * (shape + TAIL_SDS * np.sqrt(shape) + TAIL_OFFSET)
    return np.minimum(x, cap)


def gamma_quantile(mean: np.ndarray, var: np.ndarray, q: float | np.ndarray) -> np.ndarray:
    """Quantile ``q`` of a Gamma with this mean and variance (the mean itself when var = 0)."""
    mean, var = np.asarray(mean, dtype=float), np.asarray(var, dtype=float)
    ok, shape, scale = _gamma(mean, var)
    return np.asarray(np.where(ok, stats.gamma.ppf(q, shape, scale=scale), mean))


def gamma_sf(mean: np.ndarray, var: np.ndarray, x: np.ndarray) -> np.ndarray:
    """P(D > x) for the Gamma with this mean and variance (a step when var = 0)."""
    mean, var, x = (np.asarray(a, dtype=float) for a in (mean, var, x))
    ok, shape, scale = _gamma(mean, var)
    tail = stats.gamma.sf(_in_tail_range(x, shape, scale), shape, scale=scale)
    return np.asarray(np.where(ok, tail, (mean > x).astype(float)))


def expected_shortfall(mean: np.ndarray, var: np.ndarray, x: np.ndarray) -> np.ndarray:
    """E[(D - x)+]: expected units short when demand D exceeds the stock ``x``."""
    mean, var, x = (np.asarray(a, dtype=float) for a in (mean, var, x))
    ok, shape, scale = _gamma(mean, var)
    xc = _in_tail_range(x, shape, scale)
    gamma_part = mean * stats.gamma.sf(xc, shape + 1, scale=scale) - xc * stats.gamma.sf(
        xc, shape, scale=scale
    )
    return np.asarray(np.where(ok, np.maximum(gamma_part, 0.0), np.maximum(mean - x, 0.0)))


def weeks_of_cover(mean: np.ndarray, stock: np.ndarray, first_week_span: float = 1.0) -> np.ndarray:
    """Weeks from ``as_of`` until cumulative expected demand reaches ``stock`` (interpolated
    inside a week; the first table week lasts ``first_week_span``).

    Beyond the table the last week's rate continues; ``inf`` when that rate is 0 and the table's
    demand never reaches the stock, or when the cover exceeds float64's range.
    """
    mean = np.atleast_2d(mean)
    start, length = week_starts(mean.shape[1], first_week_span)
    stock = np.broadcast_to(np.asarray(stock, dtype=float), (mean.shape[0],))
    cum = np.cumsum(mean, axis=1)
    out = np.empty(mean.shape[0])
    for i in range(mean.shape[0]):
        if stock[i] <= 0:
            out[i] = 0.0
            continue
        k = int(np.searchsorted(cum[i], stock[i], side="left"))
        if k < mean.shape[1]:
            before = cum[i, k - 1] if k > 0 else 0.0
            out[i] = start[k] + length[k] * (stock[i] - before) / mean[i, k]
        else:
            rate = mean[i, -1] / length[-1]
            end = start[-1] + length[-1]
            with np.errstate(over="ignore"):  # cover beyond float64's range is inf
                out[i] = np.inf if rate <= 0 else end + (stock[i] - cum[i, -1]) / rate
    return out


def check_policy(lead_time: np.ndarray, review_period: np.ndarray, service_level: float) -> None:
    """ValueError for a service level outside (0, 1) or a negative lead time / review period."""
    if not 0.0 < float(service_level) < 1.0:
        raise ValueError(f"service_level must be strictly between 0 and 1, got {service_level}")
    if np.any(np.asarray(lead_time) < 0):
        raise ValueError(f"lead_time must be >= 0 weeks, got {lead_time}")
    if np.any(np.asarray(review_period) < 0):
        raise ValueError(f"review_period must be >= 0 weeks, got {review_period}")


def plan(
    p10: np.ndarray,
    p50: np.ndarray,
    p90: np.ndarray,
    *,
    lead_time: float | np.ndarray,
    review_period: float | np.ndarray = 1.0,
    service_level: float = 0.95,
    on_hand: float | np.ndarray = 0.0,
    on_order: float | np.ndarray = 0.0,
    price: float | np.ndarray | None = None,
    overstock_factor: float = 2.0,
    first_week_span: float = 1.0,
) -> dict[str, np.ndarray]:
    """Inventory plan per item from weekly quantiles (n, weeks); see the module docstring.

    Returns arrays (n,): ``expected_lead_time_demand``, ``reorder_point``, ``order_up_to``,
    ``safety_stock``, ``order_quantity`` (up to ``order_up_to`` when the position is at or below
    the reorder point, else 0), ``p_stockout``, ``weeks_of_cover``, ``stockout_risk`` (flag:
    ``p_stockout > 1 - service_level``), ``overstock`` (flag: cover > ``overstock_factor`` x the
    table's span), ``revenue_at_risk`` (expected units short over the lead time x price) and
    ``overstock_value`` (position beyond the table's expected demand x price).
    ``first_week_span`` (0, 1]: the part of the first table week still ahead of ``as_of`` (its
    quantiles are then the demand of that part): spans and cover count from ``as_of``.
    """
    p10, p50, p90 = (
        np.atleast_2d(_arr(a, n)) for a, n in ((p10, "p10"), (p50, "p50"), (p90, "p90"))
    )
    if not p10.shape == p50.shape == p90.shape:
        raise ValueError(f"p10/p50/p90 shapes differ: {p10.shape}, {p50.shape}, {p90.shape}")
    n, weeks = p10.shape
    lt = np.broadcast_to(_arr(lead_time, "lead_time"), (n,))
    rp = np.broadcast_to(_arr(review_period, "review_period"), (n,))
    check_policy(lt, rp, service_level)
    oh = np.broadcast_to(_arr(on_hand, "on_hand"), (n,))
    oo = np.broadcast_to(_arr(on_order, "on_order"), (n,))
    if np.any(oh < 0) or np.any(oo < 0):
        raise ValueError("on_hand and on_order must be >= 0 units")
    if overstock_factor <= 0:
        raise ValueError(f"overstock_factor must be > 0, got {overstock_factor}")
    if not 0.0 < float(first_week_span) <= 1.0:
        raise ValueError(f"first_week_span must be in (0, 1], got {first_week_span}")
    pr = np.broadcast_to(_arr(1.0 if price is None else price, "price"), (n,))
    mean, var = weekly_moments(p10, p50, p90)
    m_l, v_l = span_moments(mean, var, lt, first_week_span)
    m_lr, v_lr = span_moments(mean, var, lt + rp, first_week_span)
    table_weeks = weeks - 1 + float(first_week_span)
    rop = gamma_quantile(m_l, v_l, service_level)
    s_level = gamma_quantile(m_lr, v_lr, service_level)
    # sums and products beyond float64's range (stock near 1e308) saturate to inf, unwarned
    with np.errstate(over="ignore"):
        position = oh + oo
        excess = np.maximum(position - mean.sum(axis=1), 0.0)
        overstock_value = excess * pr
    p_out = gamma_sf(m_l, v_l, position)
    cover = weeks_of_cover(mean, position, first_week_span)
    short = expected_shortfall(m_l, v_l, position)
    return {
        "expected_lead_time_demand": m_l,
        "reorder_point": rop,
        "order_up_to": s_level,
        "safety_stock": s_level - m_lr,
        "order_quantity": np.where(position <= rop, np.maximum(s_level - position, 0.0), 0.0),
        "p_stockout": p_out,
        "weeks_of_cover": cover,
        "stockout_risk": p_out > 1.0 - service_level,
        "overstock": cover > overstock_factor * table_weeks,
        "revenue_at_risk": short * pr,
        "overstock_value": np.where(cover > overstock_factor * table_weeks, overstock_value, 0.0),
    }
