"""Known-answer tests for user features, segment rules and labels; a property-based leakage test."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from features.labels import churn_labels, future_spend, repurchase_labels
from features.momentum import item_momentum_stats, momentum_features
from features.purchases import Purchases
from features.segments import segment_tags
from features.users import feature_names, user_features

AS_OF = pd.Timestamp("2024-03-01")
COLS = ["customer_id", "order_id", "item_id", "ordered_at", "quantity", "unit_price", "is_return"]
ROWS = [
    # customer A: two orders, one return, one order after as_of
    ("A", "o1", "x", "2024-01-01 10:00", 2.0, 5.0, False),
    ("A", "o1", "y", "2024-01-01 10:00", 1.0, 10.0, False),
    ("A", "o2", "x", "2024-02-01 12:00", 1.0, 5.0, False),
    ("A", "r1", "x", "2024-02-05 09:00", -1.0, 5.0, True),
    ("A", "o3", "y", "2024-03-05 10:00", 1.0, 10.0, False),
    # customer B: one order ten days before as_of
    ("B", "o4", "z", "2024-02-20 00:00", 4.0, 2.5, False),
    # customer C: only after as_of (not in the population)
    ("C", "o5", "z", "2024-03-02 08:00", 1.0, 2.5, False),
]


def frame(rows: list[tuple]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=COLS)
    for c in ("customer_id", "order_id", "item_id"):
        df[c] = df[c].astype("category")
    df["ordered_at"] = pd.to_datetime(df["ordered_at"], format="mixed")
    return df


@pytest.fixture
def feats() -> pd.DataFrame:
    return user_features(frame(ROWS), AS_OF)


def test_population_and_columns(feats: pd.DataFrame) -> None:
    assert list(feats.index) == ["A", "B"]
    assert list(feats.columns) == feature_names()


def test_rfm_and_tenure(feats: pd.DataFrame) -> None:
    a, b = feats.loc["A"], feats.loc["B"]
    assert a["recency_days"] == pytest.approx(28.5)
    assert a["tenure_days"] == pytest.approx(60 - 10 / 24)
    assert a["n_orders"] == 2 and b["n_orders"] == 1
    assert a["monetary_total"] == pytest.approx(25.0)
    assert a["monetary_mean"] == pytest.approx(12.5)
    assert b["recency_days"] == pytest.approx(10.0)
    assert b["tenure_days"] == pytest.approx(10.0)


def test_gaps(feats: pd.DataFrame) -> None:
    a, b = feats.loc["A"], feats.loc["B"]
    assert a["repeat_days"] == 1 and a["span_days"] == 31
    assert a["gap_mean"] == 31 and a["gap_std"] == 0 and a["gap_last"] == 31
    assert a["gap_ratio"] == pytest.approx(28.5 / 31)
    assert a["tenure_per_order"] == pytest.approx((60 - 10 / 24) / 2)
    assert b["repeat_days"] == 0 and b["span_days"] == 0
    assert all(pd.isna(b[c]) for c in ("gap_mean", "gap_std", "gap_ratio", "gap_last"))


def test_early_engagement_and_gap_trend() -> None:
    rows = [
        ("A", "o1", "x", "2023-10-01", 1.0, 1.0, False),
        ("A", "o2", "x", "2023-10-11", 1.0, 1.0, False),  # first gap 10 days
        ("A", "o3", "x", "2023-10-11 15:00", 1.0, 1.0, False),  # same day: not a new day
        ("A", "o4", "x", "2023-12-30", 1.0, 1.0, False),  # 90 days after the first: early
        ("A", "o5", "x", "2024-02-10", 1.0, 1.0, False),  # gaps 10, 80, 42
        ("B", "o6", "y", "2024-01-01", 1.0, 1.0, False),
    ]
    f = user_features(frame(rows), AS_OF)
    a, b = f.loc["A"], f.loc["B"]
    assert a["first_gap"] == 10 and a["repeat_first90d"] == 2
    assert a["gap_trend"] == pytest.approx(42 / (132 / 3))
    assert pd.isna(b["first_gap"]) and pd.isna(b["gap_trend"]) and b["repeat_first90d"] == 0
    assert a["orders_decay7"] == pytest.approx(
        sum(np.exp(-d * np.log(2) / 7) for d in (20, 62, 141.375, 142, 152))
    )
    assert a["orders_decay180"] == pytest.approx(
        sum(np.exp(-d * np.log(2) / 180) for d in (20, 62, 141.375, 142, 152))
    )


def test_windows_and_trend(feats: pd.DataFrame) -> None:
    a = feats.loc["A"]
    assert a["orders_30d"] == 1 and a["spend_30d"] == 5
    assert a["orders_90d"] == 2 and a["spend_90d"] == 25
    assert a["orders_180d"] == 2 and a["spend_180d"] == 25
    assert a["orders_prev90d"] == 0 and a["spend_prev90d"] == 0
    assert pd.isna(a["spend_change_90d"])
    assert a["orders_trend"] == 2
    assert a["orders_decay30"] == pytest.approx(
        np.exp(-28.5 * np.log(2) / 30) + np.exp(-(60 - 10 / 24) * np.log(2) / 30)
    )


def test_spend_change_previous_quarter() -> None:
    rows = [
        ("A", "o1", "x", "2023-10-15", 10.0, 10.0, False),  # 100 in the quarter before last
        ("A", "o2", "x", "2024-02-01", 4.0, 10.0, False),  # 40 in the last quarter
    ]
    f = user_features(frame(rows), AS_OF).loc["A"]
    assert f["spend_prev90d"] == 100 and f["spend_90d"] == 40
    assert f["spend_change_90d"] == pytest.approx(-0.6)


def test_basket_breadth_items(feats: pd.DataFrame) -> None:
    a, b = feats.loc["A"], feats.loc["B"]
    assert a["basket_lines"] == 1.5 and a["basket_units"] == 2
    assert a["unit_price_mean"] == pytest.approx(25 / 4)
    assert a["units_per_line"] == pytest.approx(4 / 3)
    assert a["distinct_items"] == 2 and a["items_per_order"] == 1
    assert b["units_per_line"] == 4
    assert a["item_popularity"] == pytest.approx(np.log(2))  # every item has one buyer
    assert a["item_repeat_rate"] == pytest.approx(0.5)  # x re-bought on another day, y not
    assert b["item_repeat_rate"] == 0


def test_item_retention_known_answer() -> None:
    rows = [
        ("A", "o1", "x", "2023-11-01", 1.0, 1.0, False),
        ("A", "o2", "y", "2023-11-11", 1.0, 1.0, False),  # A came back 10 days after buying x
        ("B", "o3", "y", "2023-11-01", 1.0, 1.0, False),  # B never came back
    ]
    f = user_features(frame(rows), AS_OF)
    # known lines: x came back (1/1), y: o2 did not (A no later order), o3 did not -> 0/2
    overall = 1 / 3
    x_ret = (1 + 20 * overall) / (1 + 20)
    y_ret = (0 + 20 * overall) / (2 + 20)
    assert f.loc["A", "item_retention"] == pytest.approx((x_ret + y_ret) / 2)
    assert f.loc["A", "last_order_retention"] == pytest.approx(y_ret)
    assert f.loc["B", "item_retention"] == pytest.approx(y_ret)


def test_returns_discounts(feats: pd.DataFrame) -> None:
    a, b = feats.loc["A"], feats.loc["B"]
    assert a["return_orders"] == 1 and a["return_rate"] == pytest.approx(5 / 25)
    assert b["return_orders"] == 0 and b["return_rate"] == 0
    assert pd.isna(a["discount_share"])
    df = frame(ROWS)
    df["discount"] = [0.1, 0.0, 0.0, 0.0, 0.5, 0.2, 0.0]
    f = user_features(df, AS_OF)
    assert f.loc["A", "discount_share"] == pytest.approx(1 / 3)
    assert f.loc["B", "discount_share"] == 1


def test_regularity_and_season(feats: pd.DataFrame) -> None:
    a, b = feats.loc["A"], feats.loc["B"]
    assert a["active_months"] == 2 and a["active_month_share"] == 1.0
    assert a["active_weeks_180d"] == 2
    assert a["weekend_share"] == 0  # Monday and Thursday
    assert a["hour_mean"] == pytest.approx(11.0)
    assert a["q4_share"] == 0 and b["hour_mean"] == 0
    assert a["orders_ly_next90d"] == 0


def test_same_season_last_year() -> None:
    rows = [
        ("A", "o1", "x", "2023-03-10", 1.0, 1.0, False),  # 357 days before as_of: in next-90 LY
        ("A", "o2", "x", "2023-04-15", 1.0, 1.0, False),  # Saturday; next-90 LY, not next-30
        ("A", "o3", "x", "2023-12-24", 1.0, 1.0, False),  # Sunday, Q4
    ]
    f = user_features(frame(rows), AS_OF).loc["A"]
    assert f["orders_ly_next90d"] == 2 and f["orders_ly_next30d"] == 1
    assert f["season_share"] == pytest.approx(2 / 3)  # March-May orders / all
    assert f["q4_share"] == pytest.approx(1 / 3)
    assert f["weekend_share"] == pytest.approx(2 / 3)


def test_categories_and_country() -> None:
    items = pd.DataFrame({"item_id": ["x", "y", "z"], "category": ["cups", "cups", "toys"]})
    customers = pd.DataFrame(
        {"customer_id": ["A", "B", "C", "D"], "country": ["UK", "UK", "UK", "FR"]}
    )
    f = user_features(frame(ROWS), AS_OF, items=items, customers=customers)
    assert f.loc["A", "distinct_categories"] == 1 and f.loc["B", "distinct_categories"] == 1
    assert f.loc["A", "country_share"] == 0.75
    assert list(f.columns) == feature_names(True, True)


def test_empty_population() -> None:
    f = user_features(frame(ROWS), "2023-01-01")
    assert f.empty and list(f.columns) == feature_names()


# ---------------------------------------------------------------- segments
def test_segment_rules() -> None:
    rows = [
        ("new", "n1", "x", "2024-02-20", 1.0, 10.0, False),  # tenure 10 days
        ("dormant", "d1", "x", "2023-08-01", 1.0, 10.0, False),  # recency 213 days
        ("risk", "r1", "x", "2023-12-01", 1.0, 10.0, False),  # gap 10, recency 81 > 20
        ("risk", "r2", "x", "2023-12-11", 1.0, 10.0, False),
        ("single", "s1", "x", "2023-12-01", 1.0, 10.0, False),  # one order, 91 days > 60
        ("big", "b1", "x", "2024-01-01", 1.0, 1000.0, False),  # top spend, gap 30, recency 30
        ("big", "b2", "x", "2024-01-31", 1.0, 1000.0, False),
        ("act", "a1", "x", "2024-01-01", 1.0, 7.5, False),
        ("act", "a2", "x", "2024-02-10", 1.0, 7.5, False),
    ]
    f = user_features(frame(rows), AS_OF)
    tags = segment_tags(f, high_value_share=0.2)
    assert tags.to_dict() == {
        "act": "active",
        "big": "high-value",
        "dormant": "dormant",
        "new": "new",
        "risk": "at-risk",
        "single": "at-risk",
    }


# ---------------------------------------------------------------- labels
def test_labels() -> None:
    df = frame(ROWS)
    pop = user_features(df, AS_OF).index
    assert churn_labels(df, AS_OF, pop, 90).to_dict() == {"A": 0, "B": 1}
    assert repurchase_labels(df, AS_OF, pop, 30).to_dict() == {"A": 1, "B": 0}
    assert repurchase_labels(df, AS_OF, pop, 4).to_dict() == {"A": 0, "B": 0}  # window excludes 5th
    assert future_spend(df, AS_OF, pop, 365).to_dict() == {"A": 10.0, "B": 0.0}
    with pytest.raises(ValueError, match="horizon_days"):
        churn_labels(df, AS_OF, pop, 0)


def test_labels_ignore_returns() -> None:
    df = frame([*ROWS, ("B", "r9", "z", "2024-03-03", -1.0, 2.5, True)])
    pop = user_features(df, AS_OF).index
    assert repurchase_labels(df, AS_OF, pop, 30).to_dict() == {"A": 1, "B": 0}


def test_future_spend_is_net_of_returns_in_the_window() -> None:
    """Value is what the shop keeps: A buys 10 after as_of and returns 5 of it (or, with a
    positive quantity flagged as a return, the same); B returns more than it buys: 0, not < 0."""
    rows = [
        *ROWS,
        ("A", "r2", "y", "2024-03-06 10:00", -1.0, 5.0, True),
        ("B", "o6", "z", "2024-03-07 10:00", 1.0, 2.5, False),
        ("B", "r3", "z", "2024-03-08 10:00", 4.0, 2.5, True),
    ]
    df = frame(rows)
    pop = user_features(df, AS_OF).index
    assert future_spend(df, AS_OF, pop, 365).to_dict() == {"A": 5.0, "B": 0.0}
    assert churn_labels(df, AS_OF, pop, 90).to_dict() == {"A": 0, "B": 0}  # purchases still count


def test_net_order_value_takes_off_the_returned_share() -> None:
    from shopml.artifacts.customers import net_order_value

    m = np.array([100.0, 100.0, 100.0, 50.0])
    rate = np.array([0.0, 0.25, 1.5, np.nan])  # no returns, a quarter, more than bought, unknown
    np.testing.assert_allclose(net_order_value(m, rate), [100.0, 75.0, 0.0, 50.0])
    np.testing.assert_array_equal(net_order_value(m, None), m)


# ---------------------------------------------------------------- leakage
future_row = st.tuples(
    st.sampled_from(["A", "B", "C", "D"]),
    st.sampled_from(["o1", "o2", "o9", "o10"]),
    st.sampled_from(["x", "y", "z", "w"]),
    st.integers(min_value=0, max_value=400 * 24),  # hours on/after as_of
    st.floats(min_value=-5, max_value=20, allow_nan=False).filter(lambda q: q != 0),
    st.floats(min_value=0.1, max_value=100, allow_nan=False),
)


@settings(max_examples=40, deadline=None)
@given(st.lists(future_row, min_size=1, max_size=8))
def test_rows_on_or_after_as_of_change_no_feature(extra: list[tuple]) -> None:
    base = frame(ROWS)
    before = user_features(base, AS_OF)
    added = [
        (c, o, i, str(AS_OF + pd.Timedelta(hours=h)), q, p, q < 0) for c, o, i, h, q, p in extra
    ]
    # also change the rows already dated on/after as_of
    changed = [r if pd.Timestamp(r[3]) < AS_OF else (*r[:4], 99.0, 99.0, False) for r in ROWS]
    after = user_features(frame(changed + added), AS_OF)
    pd.testing.assert_frame_equal(before, after, check_index_type=False, check_categorical=False)


def test_return_orders_on_a_subset_of_a_categorical_frame() -> None:
    """Order codes can exceed the row count when a categorical frame was filtered."""
    import pandas as pd

    from features.users import user_features

    many = [f"o{i:04d}" for i in range(1000)]
    frame = pd.DataFrame(
        {
            "customer_id": pd.Categorical(["a", "a", "b", "b"]),
            "order_id": pd.Categorical(["o0001", "o0999", "o0002", "o0500"], categories=many),
            "item_id": pd.Categorical(["x", "x", "y", "y"]),
            "ordered_at": pd.to_datetime(["2024-01-01", "2024-01-05", "2024-01-02", "2024-01-06"]),
            "quantity": [2.0, -1.0, 1.0, -1.0],
            "unit_price": [5.0, 5.0, 3.0, 3.0],
            "is_return": [False, True, False, True],
        }
    )
    feats = user_features(frame, "2024-02-01")
    assert feats.loc["a", "return_orders"] == 1
    assert feats.loc["b", "return_orders"] == 1


def test_orders_whose_lines_are_not_contiguous() -> None:
    """Lines of one order scattered over the table (no run per order) give the same features."""
    rows = [
        *ROWS,
        ("B", "o7", "x", "2024-01-15 08:00", 2.0, 3.0, False),
        ("B", "o7", "y", "2024-01-15 08:00", 1.0, 4.0, False),
        ("B", "o7", "z", "2024-01-15 08:00", 1.0, 2.5, False),
    ]
    contiguous = user_features(frame(rows), AS_OF)
    scattered = user_features(frame([rows[i] for i in (6, 0, 7, 2, 1, 8, 3, 5, 4, 9)]), AS_OF)
    pd.testing.assert_frame_equal(contiguous, scattered)
    assert contiguous.loc["B", "n_orders"] == 2 and contiguous.loc["B", "basket_lines"] == 2
    assert contiguous.loc["B", "monetary_total"] == 10 + 12.5


def test_too_many_ids_for_one_sort_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """Customer, item and order codes that do not fit one int64 are sorted as three keys."""
    import features.purchases

    packed = user_features(frame(ROWS), AS_OF)
    monkeypatch.setattr(features.purchases, "KEY_BITS", 0)
    pd.testing.assert_frame_equal(user_features(frame(ROWS), AS_OF), packed)


def test_run_starts() -> None:
    from features.arrays import run_starts

    a, b = np.array([1, 1, 1, 2, 2]), np.array([5, 5, 6, 6, 6])
    assert run_starts(a).tolist() == [True, False, False, True, False]
    assert run_starts(a, b).tolist() == [True, False, True, True, False]
    assert run_starts(np.array([], dtype=int)).tolist() == []


MOMENTUM_ROWS = [
    ("c1", "m1", "a", "2024-02-20", 1.0, 1.0, False),  # a: bought within 30 days
    ("c1", "m2", "b", "2024-01-01", 1.0, 1.0, False),
    ("c2", "m3", "a", "2024-01-05", 1.0, 1.0, False),
    ("c3", "m4", "b", "2024-02-25", 1.0, 1.0, False),  # b: bought within 30 days
    ("c3", "m5", "b", "2024-03-02", 1.0, 1.0, False),  # after as_of: not read
]


def test_item_momentum_known_answer() -> None:
    p = Purchases.of(frame(MOMENTUM_ROWS), AS_OF)
    stats = item_momentum_stats(p)
    assert stats.loc[["a", "b"]].to_numpy().tolist() == [[2, 1], [2, 1]]  # buyers, recent
    got = momentum_features(p)["item_momentum"]
    # shares of the item's OTHER buyers who bought it recently, prior 10 at the overall 2/4
    a_c1, b_c1 = (1 - 1 + 5) / 11, (1 - 0 + 5) / 11
    assert got["c1"] == pytest.approx((a_c1 + b_c1) / 2)
    assert got["c2"] == pytest.approx(6 / 11) and got["c3"] == pytest.approx(5 / 11)
    assert list(got.index) == ["c1", "c2", "c3"]


def test_item_momentum_stats_add_up_and_serve_a_part() -> None:
    orders = frame(MOMENTUM_ROWS)
    whole = item_momentum_stats(Purchases.of(orders, AS_OF))
    parts = [orders[orders["customer_id"].isin(ids)] for ids in (["c1"], ["c2", "c3"])]
    first, second = (item_momentum_stats(Purchases.of(part, AS_OF)) for part in parts)
    pd.testing.assert_frame_equal(first + second, whole)
    # a part's customers with the statistics of all get their rows among all customers
    part = momentum_features(Purchases.of(parts[1], AS_OF), whole)
    full = momentum_features(Purchases.of(orders, AS_OF))
    pd.testing.assert_frame_equal(part, full.loc[["c2", "c3"]])


def test_item_momentum_is_nan_in_a_one_item_shop() -> None:
    rows = [r for r in MOMENTUM_ROWS if r[2] == "a"]
    got = momentum_features(Purchases.of(frame(rows), AS_OF))
    assert list(got.index) == ["c1", "c2"] and got["item_momentum"].isna().all()
