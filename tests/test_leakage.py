"""Time-based evaluation: features and fitted models at ``as_of`` read nothing dated on/after it.

The project's rule: features strictly before ``as_of``, labels in ``[as_of, as_of + H)``. The
main test builds a small synthetic shop, then a second copy whose every row at or after
``as_of`` is perturbed (quantities and prices changed, a third of the rows deleted, an order at
exactly ``as_of`` 00:00, returns after ``as_of`` of earlier orders, late lines of earlier order
ids, new customers and items) together with item and customer tables that know the future
(prices and stock changed, items launched and customers signed up after ``as_of``). Every
feature function and every fitted model must give bit-identical results on both.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
import pytest

from features.purchases import Purchases
from features.schema import (
    CATEGORY,
    CHANNEL,
    COUNTRY,
    CUSTOMER_ID,
    IS_RETURN,
    ITEM_ID,
    ITEM_NAME,
    LAUNCHED_AT,
    ORDER_ID,
    ORDERED_AT,
    PRICE,
    QUANTITY,
    SEGMENT,
    SIGNED_UP_AT,
    STOCK_ON_HAND,
    UNIT_PRICE,
)

AS_OF = pd.Timestamp("2024-01-15")
IDS = (CUSTOMER_ID, ORDER_ID, ITEM_ID, CHANNEL)

Tables = tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]


def _categorical(orders: pd.DataFrame) -> pd.DataFrame:
    out = orders.copy()
    for c in IDS:
        out[c] = out[c].astype(str).astype("category")
    return out


@pytest.fixture(scope="module")
def shop() -> Tables:
    from datetime import date

    from features.synthetic import ShopConfig, customers_table, generate, items_table

    cfg = ShopConfig(
        n_customers=400, n_items=60, start=date(2023, 1, 1), end=date(2024, 6, 1), seed=3
    )
    orders = pd.concat(list(generate(cfg)), ignore_index=True)
    return _categorical(orders), items_table(cfg), customers_table(cfg)


def perturb(orders: pd.DataFrame, items: pd.DataFrame, customers: pd.DataFrame) -> Tables:
    """The tables with every row dated on/after ``AS_OF`` changed, deleted or added."""
    rng = np.random.default_rng(0)
    o = orders.copy()
    for c in IDS:
        o[c] = o[c].astype(str)
    late = (o[ORDERED_AT] >= AS_OF).to_numpy()
    assert late.sum() > 100 and (~late).sum() > 100
    o.loc[late, QUANTITY] = o.loc[late, QUANTITY] * 3 + 1
    o.loc[late, UNIT_PRICE] = o.loc[late, UNIT_PRICE] * 1.7
    o = o[~(late & (rng.random(len(o)) < 0.3))]
    early = o[o[ORDERED_AT] < AS_OF]
    # returns after as_of of earlier orders (same order id, customer and item)
    returns = early.sample(50, random_state=1)
    returns[ORDERED_AT] = AS_OF + pd.to_timedelta(rng.integers(0, 30 * 24, 50), unit="h")
    returns[QUANTITY] = -returns[QUANTITY]
    returns[IS_RETURN] = True
    # orders at exactly as_of 00:00 of known customers
    at_as_of = early.sample(30, random_state=2)
    at_as_of[ORDERED_AT] = AS_OF
    at_as_of[ORDER_ID] = [f"ZZ{i}" for i in range(30)]
    # new customers buying new items (ids sorting first), and lines added to earlier orders
    brand = early.sample(40, random_state=3)
    brand[ORDERED_AT] = AS_OF + pd.Timedelta(days=3)
    brand[CUSTOMER_ID] = [f"A_new{i % 7}" for i in range(40)]
    brand[ITEM_ID] = [f"A_item{i % 5}" for i in range(40)]
    brand[ORDER_ID] = [f"A_o{i % 9}" for i in range(40)]
    continued = early.sample(20, random_state=4)
    continued[ORDERED_AT] = AS_OF + pd.Timedelta(hours=1)
    o = pd.concat([o, returns, at_as_of, brand, continued], ignore_index=True)
    o = o.sort_values(ORDERED_AT, kind="stable").reset_index(drop=True)
    it = items.copy()
    it[PRICE] = it[PRICE] * 2
    it[STOCK_ON_HAND] = it[STOCK_ON_HAND] + 100
    new_items = pd.DataFrame(
        {
            ITEM_ID: [f"A_item{i}" for i in range(5)],
            ITEM_NAME: "new thing",
            CATEGORY: "newcat",
            PRICE: 1.0,
            LAUNCHED_AT: AS_OF + pd.Timedelta(days=2),
            STOCK_ON_HAND: 5.0,
        }
    )
    new_customers = pd.DataFrame(
        {
            CUSTOMER_ID: [f"A_new{i}" for i in range(7)] + [f"B_later{i}" for i in range(200)],
            SIGNED_UP_AT: AS_OF + pd.Timedelta(days=1),
            COUNTRY: "FR",
            SEGMENT: "standard",
        }
    )
    return (
        _categorical(o),
        pd.concat([it, new_items], ignore_index=True),
        pd.concat([customers, new_customers], ignore_index=True),
    )


@pytest.fixture(scope="module")
def perturbed(shop: Tables) -> Tables:
    return perturb(*shop)


def _same(a: Any, b: Any) -> None:
    if isinstance(a, pd.DataFrame):
        pd.testing.assert_frame_equal(
            a, b, check_exact=True, check_categorical=False, check_index_type=False
        )
    else:
        assert a == b


def _users(t: Tables, as_of: pd.Timestamp = AS_OF) -> pd.DataFrame:
    from features.users import user_features

    return user_features(t[0], as_of, items=t[1], customers=t[2])


def _items(t: Tables, as_of: pd.Timestamp = AS_OF) -> pd.DataFrame:
    from features.items import item_features

    return item_features(t[0], as_of, items=t[1])


def _habits(t: Tables, as_of: pd.Timestamp = AS_OF) -> pd.DataFrame:
    from features.habits import habit_features

    return habit_features(Purchases.of(t[0], as_of))


def _rebuy(t: Tables, as_of: pd.Timestamp = AS_OF) -> pd.DataFrame:
    from features.rebuy import rebuy_features

    return rebuy_features(Purchases.of(t[0], as_of))


def _momentum(t: Tables, as_of: pd.Timestamp = AS_OF) -> pd.DataFrame:
    from features.momentum import momentum_features

    return momentum_features(Purchases.of(t[0], as_of))


def _snapshot(t: Tables, as_of: pd.Timestamp = AS_OF) -> pd.DataFrame:
    from training.snapshots import customer_features

    return customer_features(t[0], as_of, items=t[1], customers=t[2], optional=True)


def _interactions(t: Tables, as_of: pd.Timestamp = AS_OF) -> pd.DataFrame:
    from features.interactions import build_interactions

    m = build_interactions(t[0], as_of)
    return pd.DataFrame(m.matrix.toarray(), index=m.user_ids, columns=m.item_ids)


def _weekly(t: Tables, as_of: pd.Timestamp = AS_OF) -> pd.DataFrame:
    from features.demand import weekly_demand

    wd = weekly_demand(t[0], as_of)
    price = pd.DataFrame(wd.price, index=wd.items, columns=wd.weeks)
    return pd.concat({"units": wd.frame(), "price": price})


FEATURES: dict[str, Callable[..., pd.DataFrame]] = {
    "users": _users,
    "items": _items,
    "habits": _habits,
    "rebuy": _rebuy,
    "momentum": _momentum,
    "snapshot": _snapshot,
    "interactions": _interactions,
    "weekly_demand": _weekly,
}


@pytest.mark.parametrize("name", list(FEATURES))
def test_features_ignore_every_row_on_or_after_as_of(
    shop: Tables, perturbed: Tables, name: str
) -> None:
    """Found two leaks: ``country_share`` counted customers signed up after as_of, and the
    re-buy columns changed in the last bits with the items first sold after as_of."""
    _same(FEATURES[name](shop), FEATURES[name](perturbed))


@pytest.mark.parametrize("threads", [1, 2])
def test_feature_pipeline_ignores_rows_on_or_after_as_of(
    shop: Tables, perturbed: Tables, threads: int
) -> None:
    """``build_feature_set`` (what ``shopml features`` writes): users, items, interactions and
    weekly demand identical; only the labels read the perturbed window."""
    from features.io import Dataset
    from features.pipeline import build_feature_set

    a, b = (
        build_feature_set(Dataset(t[0], t[1], t[2]), AS_OF, threads=threads)
        for t in (shop, perturbed)
    )
    _same(a.users, b.users)
    _same(a.items, b.items)
    assert (a.interactions.matrix != b.interactions.matrix).nnz == 0
    np.testing.assert_array_equal(a.interactions.user_ids, b.interactions.user_ids)
    np.testing.assert_array_equal(a.interactions.item_ids, b.interactions.item_ids)
    np.testing.assert_array_equal(a.demand.units, b.demand.units)
    np.testing.assert_array_equal(a.demand.price, b.demand.price)
    assert a.labels is not None and b.labels is not None
    assert not a.labels["spend"].equals(b.labels["spend"])  # the labels do read the window


def test_churn_and_repurchase_models_ignore_rows_on_or_after_as_of(
    shop: Tables, perturbed: Tables
) -> None:
    """Validation and calibration cutoffs' label windows end by as_of: same scores."""
    from training.customers import ChurnModel, RepurchaseModel

    for cls in (ChurnModel, RepurchaseModel):
        a = cls(num_boost_round=20, num_threads=1).fit(shop[0], AS_OF, shop[1], shop[2])
        b = cls(num_boost_round=20, num_threads=1).fit(*perturbed[:1], AS_OF, *perturbed[1:])
        assert a.artifact_ is not None and b.artifact_ is not None
        assert a.artifact_.scores is not None and b.artifact_.scores is not None
        _same(a.artifact_.scores, b.artifact_.scores)
        assert a.validation_ == b.validation_


def test_value_model_ignores_rows_on_or_after_as_of(shop: Tables, perturbed: Tables) -> None:
    """A 90-day horizon gives the value model a backtest (validation cutoff + training cutoffs,
    spend labels ending by as_of) on this 13-month history."""
    from training.customer_value import ValueModel

    a = ValueModel(horizon_days=90, num_boost_round=20).fit(shop[0], AS_OF, shop[1], shop[2])
    b = ValueModel(horizon_days=90, num_boost_round=20).fit(
        perturbed[0], AS_OF, perturbed[1], perturbed[2]
    )
    assert set(a.validation_) == {"lightgbm", "bgnbd-gammagamma"}  # the backtest ran
    assert a.validation_ == b.validation_
    assert a.artifact_ is not None and b.artifact_ is not None
    assert a.artifact_.scores is not None and b.artifact_.scores is not None
    _same(a.artifact_.scores, b.artifact_.scores)


def test_recommender_ignores_rows_on_or_after_as_of(shop: Tables, perturbed: Tables) -> None:
    from training.recommender import RecommenderModel

    def fit(t: Tables) -> RecommenderModel:
        model = RecommenderModel(
            factors=8,
            iterations=5,
            knn_k=10,
            n_als=10,
            n_knn=10,
            n_pop=5,
            ranker_params={"n_estimators": 20, "min_child_samples": 5},
            num_threads=1,
        )
        return model.fit(t[0], AS_OF, items=t[1], customers=t[2])

    a, b = fit(shop), fit(perturbed)
    users = [str(u) for u in shop[0][CUSTOMER_ID].cat.categories]
    for policy in ("auto", "always", "never"):
        assert a.recommend_batch(users, 10, exclude=policy) == b.recommend_batch(
            users, 10, exclude=policy
        )
    assert not b.artifact.knows_user("A_new0")


def test_demand_model_ignores_rows_on_or_after_as_of(shop: Tables, perturbed: Tables) -> None:
    from training.demand import DemandModel

    def fit(t: Tables) -> Any:
        return DemandModel(num_rounds=15, num_leaves=7, min_data_in_leaf=20, num_threads=1).fit(
            t[0], AS_OF, t[1]
        )

    a, b = fit(shop).artifact_, fit(perturbed).artifact_
    assert list(a.items) == list(b.items)
    np.testing.assert_array_equal(a.point, b.point)
    np.testing.assert_array_equal(a.quantiles, b.quantiles)


# ------------------------------------------------------------------ known answers at the edges
def test_country_share_counts_only_customers_known_at_as_of() -> None:
    from features.users import user_features

    orders = pd.DataFrame(
        {
            CUSTOMER_ID: ["a", "b"],
            ORDER_ID: ["o1", "o2"],
            ITEM_ID: ["x", "x"],
            ORDERED_AT: pd.to_datetime(["2024-01-02", "2024-01-03"]),
            QUANTITY: [1.0, 1.0],
            UNIT_PRICE: [2.0, 2.0],
            IS_RETURN: [False, False],
        }
    )
    customers = pd.DataFrame(
        {
            CUSTOMER_ID: ["a", "b", "c", "d", "e"],
            COUNTRY: ["UK", "FR", "UK", "FR", "FR"],
            # c signed up before as_of, d on as_of (future), e without a sign-up time (counts)
            SIGNED_UP_AT: pd.DatetimeIndex(
                ["2023-01-01", "2023-06-01", "2023-12-01", "2024-01-15", "NaT"]
            ),
        }
    )
    f = user_features(orders, AS_OF, customers=customers)
    # known: a (UK), b (FR), c (UK), e (FR): UK 2/4, FR 2/4 (with d: FR 3/5)
    assert f.loc["a", "country_share"] == 0.5
    assert f.loc["b", "country_share"] == 0.5
    f = user_features(orders, AS_OF, customers=customers.drop(columns=SIGNED_UP_AT))
    assert f.loc["b", "country_share"] == 0.6  # no sign-up times: every row counts
    late = customers.assign(**{SIGNED_UP_AT: AS_OF})
    f = user_features(orders, AS_OF, customers=late)
    assert np.isnan(f["country_share"].to_numpy()).all()  # nobody known yet: no share


def test_online_retail_customers_are_known_from_their_first_line() -> None:
    from features.adapters import online_retail

    raw = pd.DataFrame(
        {
            "InvoiceNo": ["1", "C2", "3", "4"],
            "StockCode": ["10001", "10001", "10002", "10002"],
            "Description": ["RED MUG", "RED MUG", "BLUE CUP", "BLUE CUP"],
            "Quantity": [1, -1, 2, 2],
            "InvoiceDate": pd.to_datetime(
                ["2011-02-01 10:00", "2011-01-05 09:00", "2011-09-02", "2011-03-01"],
                format="ISO8601",
            ),
            "UnitPrice": [1.0, 1.0, 2.0, 2.0],
            "CustomerID": [17850.0, 17850.0, 13047.0, 13047.0],
            "Country": ["United Kingdom", "United Kingdom", "France", "France"],
        }
    )
    customers = online_retail(raw).customers
    assert customers is not None
    first = customers.set_index(CUSTOMER_ID)[SIGNED_UP_AT]
    assert first["17850"] == pd.Timestamp("2011-01-05 09:00")  # a cancellation line counts
    assert first["13047"] == pd.Timestamp("2011-03-01")


def test_label_window_is_as_of_inclusive_end_exclusive() -> None:
    from features.labels import churn_labels, future_spend, repurchase_labels

    def line(c: str, when: pd.Timestamp, qty: float = 1.0, ret: bool = False) -> dict[str, Any]:
        return {
            CUSTOMER_ID: c,
            ORDER_ID: f"{c}{when}",
            ITEM_ID: "x",
            ORDERED_AT: when,
            QUANTITY: qty,
            UNIT_PRICE: 3.0,
            IS_RETURN: ret,
        }

    H = pd.Timedelta(days=30)
    us = pd.Timedelta(microseconds=1)
    orders = pd.DataFrame(
        [
            line("at", AS_OF),  # first instant of the window: a label
            line("before", AS_OF - us),  # last instant before it: a feature
            line("end", AS_OF + H),  # first instant after the window
            line("last", AS_OF + H - us, qty=2.0),  # last instant inside
            line("ret", AS_OF + pd.Timedelta(days=1), qty=-1.0, ret=True),  # returns never count
        ]
    )
    pop = pd.Index(["at", "before", "end", "last", "ret"])
    assert repurchase_labels(orders, AS_OF, pop, 30).to_dict() == {
        "at": 1,
        "before": 0,
        "end": 0,
        "last": 1,
        "ret": 0,
    }
    assert churn_labels(orders, AS_OF, pop, 30).tolist() == [0, 1, 1, 0, 1]
    assert future_spend(orders, AS_OF, pop, 30).tolist() == [3.0, 0.0, 0.0, 6.0, 0.0]


def test_training_cutoffs_label_windows_end_by_as_of() -> None:
    from training.snapshots import monthly_cutoffs

    first = pd.Timestamp("2010-12-01")
    for as_of in (pd.Timestamp("2011-09-01"), pd.Timestamp("2011-09-17 13:00")):
        for h in (30, 90):
            cuts = monthly_cutoffs(first, as_of, h, 30, 12)
            assert cuts and all(c + pd.Timedelta(days=h) <= as_of for c in cuts)
    # 2011-09-01 with 90 days: the newest cutoff whose window ends by as_of is 2011-06-01
    assert monthly_cutoffs(first, pd.Timestamp("2011-09-01"), 90, 30, 1) == [
        pd.Timestamp("2011-06-01")
    ]


def test_demand_validation_origin_reads_no_week_after_it(shop: Tables) -> None:
    """The demand model's validation origins (weeks ``o`` before the last one) are scored with
    boosters and components computed as the fit does, with the item statics (first sale) taken
    from the whole history: perturbing every week after ``o`` changes none of them."""
    from features.demand import WeeklyDemand, weekly_demand
    from training.demand import DemandModel, ItemStatics, components

    wd = weekly_demand(shop[0], AS_OF)
    t = len(wd.weeks) - 1
    o = t - 8
    rng = np.random.default_rng(5)
    units = wd.units.copy()
    units[:, o + 1 :] = rng.poisson(3.0, units[:, o + 1 :].shape) * (1 + units[:, o + 1 :])
    units[0, : o + 1] = 0.0  # an item first sold after the origin
    units[0, o + 1 :] = 7.0
    price = wd.price.copy()
    price[:, o + 1 :] *= 3.0
    base = wd.units.copy()
    base[0, : o + 1] = 0.0
    shops = [WeeklyDemand(wd.items, wd.weeks, u, p) for u, p in ((base, wd.price), (units, price))]
    model = DemandModel(num_rounds=10, num_leaves=7, min_data_in_leaf=20, num_threads=1)
    out = []
    for w in shops:
        nz = w.units > 0
        statics = ItemStatics(
            category=np.arange(len(w.items)) % 3,
            first_week=np.where(nz.any(axis=1), nz.argmax(axis=1), len(w.weeks)),
        )
        rows = np.flatnonzero(nz[:, : o + 1].sum(axis=1) >= 10)
        boosters = model._fit_all(w, o, statics, rows, 8)
        comp = components(w, o, statics, rows, boosters, 8)
        trees = [b.model_to_string() for bs in boosters.values() for b in bs]
        out.append((rows, trees, comp))
    (r1, t1, c1), (r2, t2, c2) = out
    np.testing.assert_array_equal(r1, r2)
    assert t1 == t2
    for name in ("quant", "point", "dec", "phi", "cls"):
        np.testing.assert_array_equal(getattr(c1, name), getattr(c2, name))


def test_as_of_with_a_utc_offset_is_the_same_instant_in_naive_utc(shop: Tables) -> None:
    """Order times are naive UTC after validation. An ``as_of`` with an offset was compared in
    UTC by the features (NumPy dropped the offset with a warning) but raised TypeError in the
    labels and weekly demand; now every function reads it as the same naive UTC instant."""
    import warnings

    from features.demand import weekly_demand
    from features.interactions import build_interactions, purchases_before
    from features.labels import churn_labels, label_window_covered
    from training.encoded_shop import purchase_mask

    orders = shop[0]
    aware = pd.Timestamp("2024-01-15 01:00", tz="Europe/Paris")  # = AS_OF in UTC
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "no explicit representation of timezones"
        for fn in (_users, _items, _snapshot, _interactions):
            pd.testing.assert_frame_equal(fn(shop), fn(shop, aware))
        pop = _users(shop).index
        pd.testing.assert_series_equal(
            churn_labels(orders, aware, pop), churn_labels(orders, AS_OF, pop)
        )
        assert label_window_covered(orders, aware, 30) == label_window_covered(orders, AS_OF, 30)
        np.testing.assert_array_equal(
            weekly_demand(orders, aware).units, weekly_demand(orders, AS_OF).units
        )
        since = aware - pd.Timedelta(days=40)
        assert len(purchases_before(orders, aware, since)) == len(
            purchases_before(orders, AS_OF, AS_OF - pd.Timedelta(days=40))
        )
        np.testing.assert_array_equal(purchase_mask(orders, aware), purchase_mask(orders, AS_OF))
        m = build_interactions(orders, aware, weight="binary")
        assert m.matrix.sum() == build_interactions(orders, AS_OF, weight="binary").matrix.sum()
