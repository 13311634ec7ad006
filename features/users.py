"""Point-in-time user (customer) features: a pure function of the tables and ``as_of``.

Only order lines dated strictly before ``as_of`` are read. The population is every customer with
at least one purchase (non-return line) before ``as_of``; the result is indexed by customer id in
the order of the id's categories. Everything is vectorised over integer codes (no per-customer
Python), so the function scales to millions of order lines.

Units: days (float) for times, the shop's currency for money. Missing values are NaN where a
quantity is undefined (e.g. the gap statistics of a one-order customer).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from features.arrays import add_at, blocks, counts, run_starts, safe_div, unique
from features.purchases import Purchases
from features.schema import (
    CATEGORY,
    COUNTRY,
    CUSTOMER_ID,
    DISCOUNT,
    ITEM_ID,
    QUANTITY,
    SIGNED_UP_AT,
    UNIT_PRICE,
)

WINDOWS = (30, 90, 180)
DECAYS = (7, 30, 90, 180)
RETENTION_DAYS = 30.0
DENSE_LIMIT = 1 << 24  # customer x category flags up to 16 MB; a sort above

#: The feature columns (in order) :func:`user_features` returns.
RFM_FEATURES = ["recency_days", "n_orders", "monetary_total", "tenure_days"]
BTYD_COLUMNS = ["repeat_days", "span_days", "tenure_days"]  # x, t_x, T of BTYD models (days)


def user_features(
    orders: pd.DataFrame,
    as_of: object,
    *,
    items: pd.DataFrame | None = None,
    customers: pd.DataFrame | None = None,
    item_stats: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """User features as of ``as_of`` from order lines strictly before it.

    ``item_stats``: the :func:`item_statistics` of all customers when ``orders`` holds only some
    of them (a partition), so that the item-dependent columns see every customer.
    :func:`user_features_of` does the same from :class:`~features.purchases.Purchases` built
    already (shared with the item and interaction features).

    Columns (days and currency):

    - RFM: ``recency_days`` (since last purchase), ``n_orders``, ``monetary_total``,
      ``monetary_mean`` (mean order value), ``tenure_days`` (since first purchase).
    - BTYD inputs: ``repeat_days`` (distinct purchase days - 1), ``span_days`` (first to last
      purchase day).
    - gaps between distinct purchase days: ``gap_mean``, ``gap_std``, ``gap_ratio`` (days since
      last purchase / usual gap), ``gap_last`` (the last gap), ``tenure_per_order``.
    - windows w in 30/90/180: ``orders_{w}d``, ``spend_{w}d``; trend: ``orders_prev90d``,
      ``spend_prev90d`` (90-180 days ago), ``spend_change_90d`` (relative change, NaN when the
      previous quarter had no spend), ``orders_trend`` (orders_90d - orders_prev90d).
    - decayed activity: ``orders_decay{7,30,90,180}`` (orders weighted by
      exp(-age/half-life*ln2)).
    - early engagement and slowing down: ``first_gap`` (first to second purchase day),
      ``repeat_first90d`` (purchase days within 90 days after the first), ``gap_trend``
      (last gap / mean gap).
    - basket: ``basket_lines``, ``basket_units``, ``unit_price_mean``, ``units_per_line``.
    - breadth: ``distinct_items``, ``items_per_order``, ``distinct_categories`` (with ``items``).
    - returns: ``return_orders``, ``return_rate`` (returned value / purchased value).
    - discounts: ``discount_share`` (share of purchase lines with a discount; NaN without the column).
    - regularity and season: ``active_months``, ``active_month_share`` (active calendar months /
      months of tenure), ``active_weeks_180d``, ``orders_ly_next90d`` and ``orders_ly_next30d``
      (orders in the same 90/30 days one year earlier), ``season_share`` (share of orders placed in
      the calendar months of the next 90 days), ``q4_share`` (share of orders in Oct-Dec),
      ``weekend_share``, ``hour_mean``.
    - what they buy: ``item_popularity`` (mean log number of buyers of their items),
      ``item_repeat_rate`` (mean share of each item's buyers who bought it on >= 2 days),
      ``item_retention``, ``last_order_retention`` (see :func:`_item_retention`).
    - where: ``country_share`` (share of customers in the same country; with ``customers``).
    """
    return user_features_of(
        Purchases.of(orders, as_of), items=items, customers=customers, item_stats=item_stats
    )


def user_features_of(
    purchases: Purchases,
    *,
    items: pd.DataFrame | None = None,
    customers: pd.DataFrame | None = None,
    item_stats: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """:func:`user_features` of the orders and ``as_of`` that ``purchases`` were built from."""
    p = purchases
    categories = p.customers
    lines = _line_sums(p, None)
    present = lines > 0
    if not present.any():
        cols = feature_names(items is not None, customers is not None)
        return pd.DataFrame(
            {c: pd.Series(dtype=np.float64) for c in cols},
            index=pd.Index([], name=CUSTOMER_ID, dtype=categories.dtype),
        )
    # one helper per group of columns: their order- and line-level temporaries die with them;
    # columns are kept for the customers in the population only (``present``)
    o_value = p.order_values()  # read by two helpers, then dropped
    base = _rfm(p, o_value)
    feats = {name: values[present] for name, values in base.items()}
    feats.update(_rows(_windows(p, o_value), present))
    del o_value
    last_age, first_age = base["recency_days"], base["tenure_days"]
    n_orders, monetary = base["n_orders"], base["monetary_total"]
    feats.update(_rows(_purchase_days(p, last_age, first_age, n_orders), present))
    feats.update(_rows(_basket(p, lines, n_orders, monetary), present))
    feats.update(_rows(_breadth(p, n_orders, last_age, items, item_stats), present))
    feats.update(_rows(_returns_and_discounts(p, lines, monetary), present))
    feats.update(_rows(_regularity(p, first_age, n_orders), present))
    if customers is not None and COUNTRY in customers:
        feats["country_share"] = _country_share(customers, categories, p.as_of)[present]
    del base, last_age, first_age, n_orders, monetary, lines
    names = feature_names(items is not None, customers is not None and COUNTRY in customers)
    return _frame(feats, names, pd.Index(categories[present], name=CUSTOMER_ID))


def _rows(feats: dict[str, np.ndarray], rows: np.ndarray) -> dict[str, np.ndarray]:
    """``feats`` with each array cut to ``rows`` (the full-length arrays are released)."""
    return {name: values[rows] for name, values in feats.items()}


def _frame(feats: dict[str, np.ndarray], names: list[str], index: pd.Index) -> pd.DataFrame:
    """The per-customer arrays ``feats`` as a frame of the columns ``names``.

    Float columns are copied one at a time into the frame's single 2-D block, each array
    released as soon as it is copied (``feats`` is emptied): no second copy of all columns.
    """
    if not all(feats[name].dtype == np.float64 for name in names):
        return pd.DataFrame({name: feats[name] for name in names}, index=index)
    block = np.empty((len(names), len(index)))
    for j, name in enumerate(names):
        block[j] = feats.pop(name)
    feats.clear()
    return pd.DataFrame(block.T, index=index, columns=pd.Index(names), copy=False)


def _rfm(p: Purchases, o_value: np.ndarray) -> dict[str, np.ndarray]:
    """Recency, frequency, monetary value, tenure (order level; ``o_value``: order values)."""
    n, o_c, o_age = p.n_customers, p.o_customer, p.o_age
    n_orders = counts(o_c, None, n)
    last_age = np.full(n, np.inf)
    np.minimum.at(last_age, o_c, o_age)
    first_age = np.full(n, -np.inf)
    np.maximum.at(first_age, o_c, o_age)
    monetary = counts(o_c, o_value, n)
    return {
        "recency_days": last_age,
        "n_orders": n_orders,
        "monetary_total": monetary,
        "monetary_mean": safe_div(monetary, n_orders),
        "tenure_days": first_age,
    }


def _purchase_days(
    p: Purchases, last_age: np.ndarray, first_age: np.ndarray, n_orders: np.ndarray
) -> dict[str, np.ndarray]:
    """Distinct purchase days, the gaps between them, early engagement."""
    n = p.n_customers
    seq = p.by_customer  # orders by customer and time
    s_c = p.o_customer[seq]
    s_day = p.o_day[seq]
    is_day = run_starts(s_c, s_day)
    d_c = s_c[is_day]
    d_day = (s_day[is_day] - s_day.min()).astype(np.float64)
    del seq, s_c, s_day, is_day
    feats: dict[str, np.ndarray] = {}
    n_days = counts(d_c, None, n)
    same = d_c[1:] == d_c[:-1]
    gaps = np.diff(d_day)[same]
    g_c = d_c[1:][same]
    n_gaps = counts(g_c, None, n)
    gap_sum = counts(g_c, gaps, n)
    gap_sq = counts(g_c, gaps * gaps, n)
    gap_mean = safe_div(gap_sum, n_gaps)
    gap_var = safe_div(gap_sq, n_gaps) - gap_mean**2
    feats["repeat_days"] = n_days - 1
    is_first = np.r_[True, ~same]
    is_last = np.r_[~same, True]
    first_day = np.full(n, np.inf)
    first_day[d_c[is_first]] = d_day[is_first]
    last_day = np.full(n, -np.inf)
    last_day[d_c[is_last]] = d_day[is_last]
    feats["span_days"] = last_day - first_day
    feats["gap_mean"] = gap_mean
    feats["gap_std"] = np.sqrt(np.clip(gap_var, 0, None))
    feats["gap_ratio"] = safe_div(last_age, gap_mean)
    last_gap = np.full(n, np.nan)
    # the last gap of each customer is the gap of its last distinct day
    has_prev = np.r_[False, same]
    sel = np.flatnonzero(is_last & has_prev)
    last_gap[d_c[sel]] = d_day[sel] - d_day[sel - 1]
    feats["gap_last"] = last_gap
    feats["tenure_per_order"] = safe_div(first_age, n_orders)
    feats["gap_trend"] = safe_div(last_gap, gap_mean)
    # early engagement: the first gap and repeat days within 90 days of the first purchase day
    second = np.flatnonzero(has_prev & np.r_[False, is_first[:-1]])
    first_gap = np.full(n, np.nan)
    first_gap[d_c[second]] = d_day[second] - d_day[second - 1]  # the day before is the first
    feats["first_gap"] = first_gap
    since_first = np.repeat(d_day[is_first], np.diff(np.r_[np.flatnonzero(is_first), len(d_day)]))
    np.subtract(d_day, since_first, out=since_first)
    early = (since_first > 0) & (since_first <= 90)
    feats["repeat_first90d"] = counts(d_c[early], None, n)
    return feats


def _windows(p: Purchases, o_rev: np.ndarray) -> dict[str, np.ndarray]:
    """Orders and spend over recent windows, their trend, decayed order counts."""
    n, o_c, o_age = p.n_customers, p.o_customer, p.o_age
    feats: dict[str, np.ndarray] = {}
    for w in WINDOWS:
        m = o_age <= w
        feats[f"orders_{w}d"] = counts(o_c[m], None, n)
        feats[f"spend_{w}d"] = counts(o_c[m], o_rev[m], n)
    m = (o_age > 90) & (o_age <= 180)
    feats["orders_prev90d"] = counts(o_c[m], None, n)
    feats["spend_prev90d"] = counts(o_c[m], o_rev[m], n)
    feats["spend_change_90d"] = safe_div(feats["spend_90d"], feats["spend_prev90d"]) - 1
    feats["orders_trend"] = feats["orders_90d"] - feats["orders_prev90d"]
    for hl in DECAYS:
        weight = np.negative(o_age)  # exp(-age * ln 2 / hl), in place
        weight *= np.log(2)
        weight /= hl
        feats[f"orders_decay{hl}"] = counts(o_c, np.exp(weight, out=weight), n)
    return feats


def _basket(
    p: Purchases, lines: np.ndarray, n_orders: np.ndarray, monetary: np.ndarray
) -> dict[str, np.ndarray]:
    """Basket size and value."""
    n, o_c = p.n_customers, p.o_customer
    units = _line_sums(p, p.orders[QUANTITY].to_numpy(dtype=np.float64))
    return {
        "basket_lines": safe_div(counts(o_c, p.order_lines(), n), n_orders),
        "basket_units": safe_div(counts(o_c, p.order_units(), n), n_orders),
        "unit_price_mean": safe_div(monetary, units),
        "units_per_line": safe_div(units, lines),
    }


def _breadth(
    p: Purchases,
    n_orders: np.ndarray,
    last_age: np.ndarray,
    items: pd.DataFrame | None,
    item_stats: pd.DataFrame | None,
) -> dict[str, np.ndarray]:
    """Distinct items and categories; what the customer's items are like."""
    n = p.n_customers
    chains = p.chains
    starts = chains.pair_start
    ci_c, ci_i = chains.pair_customer, chains.item[starts]
    del starts
    feats: dict[str, np.ndarray] = {}
    distinct_items = counts(ci_c, None, n)
    feats["distinct_items"] = distinct_items
    feats["items_per_order"] = safe_div(distinct_items, n_orders)
    stats = item_stats if item_stats is not None else item_statistics(p)
    st = stats.reindex(p.items, fill_value=0)
    item_buyers = st["buyers"].to_numpy(dtype=np.float64)
    item_repeat_rate = safe_div(st["repeaters"].to_numpy(dtype=np.float64), item_buyers)
    feats["item_popularity"] = safe_div(
        counts(ci_c, np.log1p(item_buyers[ci_i]), n), distinct_items
    )
    feats["item_repeat_rate"] = safe_div(
        counts(ci_c, np.nan_to_num(item_repeat_rate[ci_i]), n), distinct_items
    )
    feats.update(_item_retention(p, stats, last_age))
    if items is not None:
        feats["distinct_categories"] = _distinct_categories(items, p.items, ci_c, ci_i, n)
    return feats


def _returns_and_discounts(
    p: Purchases, lines: np.ndarray, monetary: np.ndarray
) -> dict[str, np.ndarray]:
    """Return orders and rate (line level, returns before as_of); share of discounted lines."""
    n, orders = p.n_customers, p.orders
    feats: dict[str, np.ndarray] = {}
    rc = p.customer_all[p.ret]
    if len(rc):
        r_rev = np.abs(
            orders[QUANTITY].to_numpy(dtype=np.float64)[p.ret]
            * orders[UNIT_PRICE].to_numpy(dtype=np.float64)[p.ret]
        )
        span = np.int64(p.order_all.max(initial=0) + 1)  # codes can exceed the row count
        r_orders = unique(rc * span + p.order_all[p.ret])
        feats["return_orders"] = counts(r_orders // span, None, n)
        feats["return_rate"] = safe_div(counts(rc, r_rev, n), monetary)
    else:
        feats["return_orders"] = np.zeros(n)
        feats["return_rate"] = np.zeros(n)
    if DISCOUNT in orders:
        discounted = orders[DISCOUNT].to_numpy(dtype=np.float64) > 0
        discounted &= p.buy
        feats["discount_share"] = safe_div(counts(p.customer_all[discounted], None, n), lines)
    else:
        feats["discount_share"] = np.full(n, np.nan)
    return feats


def _regularity(p: Purchases, first_age: np.ndarray, n_orders: np.ndarray) -> dict[str, np.ndarray]:
    """Active months and weeks, same season last year, calendar shares (order level)."""
    n, o_c, o_age, as_of = p.n_customers, p.o_customer, p.o_age, p.as_of
    o_when = p.o_when.astype("datetime64[us]", copy=False)
    feats: dict[str, np.ndarray] = {}
    seq = p.by_customer
    s_c = o_c[seq]
    o_month = o_when.astype("datetime64[M]").astype(np.int64)
    s_month = o_month[seq]
    new_month = run_starts(s_c, s_month)
    active_months = counts(s_c[new_month], None, n)
    del s_c, s_month, new_month
    feats["active_months"] = active_months
    feats["active_month_share"] = safe_div(active_months, np.floor(first_age / 30.44) + 1)
    recent = seq[o_age[seq] <= 180]
    r_c, r_week = o_c[recent], np.floor(o_age[recent] / 7).astype(np.int64)
    feats["active_weeks_180d"] = counts(r_c[run_starts(r_c, r_week)], None, n)
    del recent, r_c, r_week
    for h in (90, 30):
        m = (o_age <= 365) & (o_age > 365 - h)
        feats[f"orders_ly_next{h}d"] = counts(o_c[m], None, n)
    cal_month = o_month  # 1..12, in place
    cal_month %= 12
    cal_month += 1
    del o_month
    next_months = {
        int(x) for x in pd.date_range(as_of, as_of + pd.Timedelta(days=89), freq="D").month
    }
    # shares of orders: counts of the orders that qualify (the same sums as 0/1 weights)
    in_season = np.isin(cal_month, list(next_months))
    feats["season_share"] = safe_div(counts(o_c[in_season], None, n), n_orders)
    feats["q4_share"] = safe_div(counts(o_c[cal_month >= 10], None, n), n_orders)
    del cal_month, in_season
    o_days = o_when.astype("datetime64[D]")
    weekday = o_days.astype(np.int64)
    weekday += 3
    weekday %= 7  # 0 = Monday
    feats["weekend_share"] = safe_div(counts(o_c[weekday >= 5], None, n), n_orders)
    del weekday
    hour = (o_when - o_days) / np.timedelta64(1, "h")
    feats["hour_mean"] = safe_div(counts(o_c, hour, n), n_orders)
    return feats


def feature_names(with_items: bool = False, with_customers: bool = False) -> list[str]:
    """The columns :func:`user_features` returns, given which optional tables are present."""
    names = [
        "recency_days",
        "n_orders",
        "monetary_total",
        "monetary_mean",
        "tenure_days",
        "repeat_days",
        "span_days",
        "gap_mean",
        "gap_std",
        "gap_ratio",
        "gap_last",
        "tenure_per_order",
        "gap_trend",
        "first_gap",
        "repeat_first90d",
        *[f"{k}_{w}d" for w in WINDOWS for k in ("orders", "spend")],
        "orders_prev90d",
        "spend_prev90d",
        "spend_change_90d",
        "orders_trend",
        *[f"orders_decay{hl}" for hl in DECAYS],
        "basket_lines",
        "basket_units",
        "unit_price_mean",
        "units_per_line",
        "distinct_items",
        "items_per_order",
        "item_popularity",
        "item_repeat_rate",
        "item_retention",
        "last_order_retention",
    ]
    if with_items:
        names.append("distinct_categories")
    names += [
        "return_orders",
        "return_rate",
        "discount_share",
        "active_months",
        "active_month_share",
        "active_weeks_180d",
        "orders_ly_next90d",
        "orders_ly_next30d",
        "season_share",
        "q4_share",
        "weekend_share",
        "hour_mean",
    ]
    if with_customers:
        names.append("country_share")
    return names


#: Per-item statistics over all customers that user features read (:func:`item_statistics`).
ITEM_STAT_COLUMNS = ["buyers", "repeaters", "ret_hits", "ret_lines"]


def item_statistics(purchases: Purchases, horizon: float = RETENTION_DAYS) -> pd.DataFrame:
    """Per item (index: the item id categories), counts over the customers in ``purchases``.

    ``buyers`` (customers who bought it), ``repeaters`` (of those, bought it on >= 2 days),
    ``ret_hits`` / ``ret_lines`` (its order lines older than ``horizon`` days whose customer
    ordered again within ``horizon`` days). The counts add up over disjoint sets of customers,
    which is how the Dask engine computes them per partition and sums them.
    """
    p = purchases
    chains = p.chains
    start, end = chains.pair_start, chains.pair_end
    day = p.o_day
    repeat = day[chains.order[start]] != day[chains.order[end]]  # oldest and newest order
    came_back, known = _came_back(p, horizon)
    came_back &= known
    # the lines of those orders, counted per item (a mask as long as the lines, one at a time)
    ret_hits = np.bincount(p.item[came_back[p.line_order]], minlength=p.n_items)
    ret_lines = np.bincount(p.item[known[p.line_order]], minlength=p.n_items)
    frame = pd.DataFrame(
        {
            "buyers": np.bincount(chains.item[start], minlength=p.n_items),
            "repeaters": np.bincount(chains.item[start][repeat], minlength=p.n_items),
            "ret_hits": ret_hits,
            "ret_lines": ret_lines,
        },
        index=p.items,
    )
    return frame.astype(np.int64)


def _came_back(p: Purchases, horizon: float) -> tuple[np.ndarray, np.ndarray]:
    """Per order: did its customer order again within ``horizon`` days; is that known yet."""
    seq = p.by_customer
    s_c = p.o_customer[seq]
    again = s_c[1:] == s_c[:-1]  # the next order (in time) is the same customer's
    del s_c
    s_age = p.o_age[seq]
    gap = s_age[:-1]
    gap -= s_age[1:]
    del s_age
    again &= gap <= horizon
    del gap
    came_back = np.zeros(p.n_orders, dtype=bool)
    came_back[seq[:-1]] = again
    return came_back, p.o_age > horizon


def _item_retention(
    p: Purchases, stats: pd.DataFrame, last_age: np.ndarray, prior: float = 20.0
) -> dict[str, np.ndarray]:
    """What the customer buys, scored by how often its buyers came back.

    For every order placed more than ``horizon`` days before ``as_of`` (so the outcome is known
    before ``as_of``), "came back" = the same customer ordered again within ``horizon`` days. An
    item's retention is the smoothed share of its order lines that came back (``stats``: the
    :func:`item_statistics` over all customers); a customer's ``item_retention`` is the mean over
    all their lines, ``last_order_retention`` the mean over the lines of their last order.
    """
    n = p.n_customers
    st = stats.reindex(p.items, fill_value=0)
    hits = st["ret_hits"].to_numpy(dtype=np.float64)
    total = st["ret_lines"].to_numpy(dtype=np.float64)
    all_hits, all_lines = float(stats["ret_hits"].sum()), float(stats["ret_lines"].sum())
    overall = all_hits / all_lines if all_lines > 0 else 0.0
    item_ret = (hits + prior * overall) / (total + prior)
    o_c = p.o_customer
    last_order = p.o_age <= last_age[o_c]
    n_lines, ret_sum, n_last, last_sum = (np.zeros(n) for _ in range(4))
    for rows in blocks(len(p.line_order)):  # per-line arrays a block at a time
        order = p.line_order[rows]
        line_c, line_ret, is_last = o_c[order], item_ret[p.item[rows]], last_order[order]
        add_at(n_lines, line_c, 1.0)
        add_at(ret_sum, line_c, line_ret)
        add_at(n_last, line_c[is_last], 1.0)
        add_at(last_sum, line_c[is_last], line_ret[is_last])
    return {
        "item_retention": safe_div(ret_sum, n_lines),
        "last_order_retention": safe_div(last_sum, n_last),
    }


def _distinct_categories(
    items: pd.DataFrame, item_cats: pd.Index, ci_c: np.ndarray, ci_i: np.ndarray, n: int
) -> np.ndarray:
    if CATEGORY not in items:
        return np.full(n, np.nan)
    cat_of = pd.Series(items[CATEGORY].astype(str).to_numpy(), index=items[ITEM_ID].astype(str))
    cat_of = cat_of[~cat_of.index.duplicated()]
    mapped = cat_of.reindex(item_cats.astype(str)).to_numpy()
    cat_codes, _ = pd.factorize(mapped)  # -1 for items missing from the catalogue
    k = int(cat_codes.max()) + 2
    cc = cat_codes[ci_i] + 1  # 0 = unknown category
    if n * k <= DENSE_LIMIT:  # a customer x category table of flags
        seen = np.zeros(n * k, dtype=bool)
        seen[ci_c * np.int64(k) + cc] = True
        return seen.reshape(n, k)[:, 1:].sum(axis=1).astype(np.float64)
    pairs = unique(ci_c * np.int64(k) + cc)
    pairs = pairs[pairs % k != 0]
    return counts(pairs // k, None, n)


def _country_share(
    customers: pd.DataFrame, categories: pd.Index, as_of: pd.Timestamp
) -> np.ndarray:
    """Share of (distinct) customers in each customer's country; NaN if not in the table.

    Only customers known at ``as_of`` count: a row whose ``signed_up_at`` is on or after
    ``as_of`` is a customer of the future (a row without a sign-up time counts). A customer of
    the population keeps their own country's share even if their sign-up time is later.
    """
    ids = pd.Index(customers[CUSTOMER_ID].astype(str).to_numpy())
    first = ~ids.duplicated()
    country, _ = pd.factorize(customers[COUNTRY].astype(str).to_numpy()[first])
    counted = np.ones(len(country), dtype=bool)
    if SIGNED_UP_AT in customers:
        signed = pd.Series(customers[SIGNED_UP_AT].to_numpy()[first])
        counted = ~(signed >= as_of).to_numpy(dtype=bool, na_value=False)
    n_known = int(np.count_nonzero(counted))
    n_countries = int(country.max()) + 1 if len(country) else 0
    share = np.bincount(country[counted], minlength=n_countries) / max(n_known, 1)
    if not n_known:
        share[:] = np.nan
    where = pd.Index(categories.astype(str)).get_indexer(ids[first])
    out = np.full(len(categories), np.nan)
    out[where[where >= 0]] = share[country[where >= 0]]
    return out


def _line_sums(p: Purchases, values: np.ndarray | None) -> np.ndarray:
    """Per customer, the sum of ``values`` (one per row of the table; None: the number of
    lines) over purchase lines.

    The table is scanned a block at a time, so no purchase-line copy of ``values`` is made; the
    sums run in table order, as ``np.bincount`` over the purchase lines adds them.
    """
    out = np.zeros(p.n_customers)
    for rows in blocks(len(p.buy)):
        keep = p.buy[rows]
        add_at(out, p.customer_all[rows][keep], 1.0 if values is None else values[rows][keep])
    return out
