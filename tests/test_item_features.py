"""Known answers for the item features on a tiny hand-written order table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.items import item_features
from features.validation import validate_orders

AS_OF = pd.Timestamp("2024-03-01")


def orders(rows: list[tuple[str, str, str, str, float, float]]) -> pd.DataFrame:
    frame = pd.DataFrame(
        rows, columns=["customer_id", "order_id", "item_id", "ordered_at", "quantity", "unit_price"]
    )
    return validate_orders(frame).table


@pytest.fixture
def table() -> pd.DataFrame:
    return orders(
        [
            # tea: bought by c1 in three orders (re-bought every 20 days), by c2 once
            ("c1", "o1", "tea", "2024-01-10", 2, 5.0),
            ("c1", "o2", "tea", "2024-01-30", 1, 5.0),
            ("c1", "o3", "tea", "2024-02-19", 1, 6.0),
            ("c2", "o4", "tea", "2024-02-20", 3, 6.0),
            # mug: one buyer, one order, returned once
            ("c2", "o4", "mug", "2024-02-20", 2, 10.0),
            ("c2", "r1", "mug", "2024-02-25", -1, 10.0),
            # an old sale of a lamp and a sale on as_of (must be ignored)
            ("c3", "o5", "lamp", "2023-01-15", 1, 40.0),
            ("c3", "o6", "lamp", "2024-03-01", 5, 40.0),
        ]
    )


def test_velocity_windows(table: pd.DataFrame) -> None:
    f = item_features(table, AS_OF)
    assert f.loc["tea", "units_30d"] == 4  # 2024-02-19 (1) and 2024-02-20 (3)
    assert f.loc["tea", "units_90d"] == 7
    assert f.loc["tea", "orders_90d"] == 4
    assert f.loc["tea", "buyers_90d"] == 2
    assert f.loc["lamp", "units_365d"] == 0 and f.loc["lamp", "units_total"] == 1
    assert f.loc["mug", "units_total"] == 2


def test_recency_and_age(table: pd.DataFrame) -> None:
    f = item_features(table, AS_OF)
    assert f.loc["tea", "last_sold_days"] == pytest.approx(10.0)
    assert f.loc["tea", "first_sold_days"] == pytest.approx(51.0)
    assert f.loc["lamp", "last_sold_days"] == pytest.approx(411.0)


def test_price_and_change(table: pd.DataFrame) -> None:
    f = item_features(table, AS_OF)
    # last 30 days: 1 x 6 + 3 x 6 -> 6.0; all-time unit-weighted mean (10 + 5 + 6 + 18) / 7
    assert f.loc["tea", "price_last"] == pytest.approx(6.0)
    assert f.loc["tea", "price_mean"] == pytest.approx(39 / 7)
    assert f.loc["tea", "price_change"] == pytest.approx(6.0 / (39 / 7) - 1)
    assert f.loc["lamp", "price_last"] == pytest.approx(40.0)  # no recent sale: last price seen


def test_popularity_repeat_and_returns(table: pd.DataFrame) -> None:
    f = item_features(table, AS_OF)
    assert f.loc["tea", "popularity_rank"] == 1
    assert f.loc["tea", "repeat_rate"] == pytest.approx(0.5)  # c1 re-bought, c2 did not
    assert f.loc["tea", "repeat_interval_days"] == pytest.approx(20.0)
    assert f.loc["mug", "repeat_rate"] == 0 and f["repeat_interval_days"].isna()["mug"]
    assert f.loc["mug", "return_rate"] == pytest.approx(0.5)
    assert f.loc["tea", "return_rate"] == 0


def test_category_from_items_table(table: pd.DataFrame) -> None:
    items = pd.DataFrame({"item_id": ["tea", "mug"], "category": ["drinks", "kitchen"]})
    f = item_features(table, AS_OF, items=items)
    assert f.loc["tea", "category"] == "drinks"
    assert f["category"].isna()["lamp"]


def test_rows_on_or_after_as_of_change_nothing(table: pd.DataFrame) -> None:
    before = item_features(table, AS_OF)
    extra = orders(
        [("c9", "o9", "tea", "2024-03-01", 100, 1.0), ("c9", "o9", "new", "2024-05-01", 1, 1.0)]
    )
    combined = pd.concat([table, extra], ignore_index=True)
    for col in ("customer_id", "order_id", "item_id"):
        combined[col] = combined[col].astype("category")
    after = item_features(combined, AS_OF)
    pd.testing.assert_frame_equal(before, after)


def test_orders_whose_lines_are_not_contiguous(table: pd.DataFrame) -> None:
    scattered = table.iloc[[4, 0, 6, 3, 1, 7, 2, 5]].reset_index(drop=True)
    pd.testing.assert_frame_equal(item_features(table, AS_OF), item_features(scattered, AS_OF))


def test_default_interactions_match_the_general_path(table: pd.DataFrame) -> None:
    """The default matrix comes from the purchase chains; ``since`` takes the general path."""
    from features.interactions import build_interactions

    extra = orders(
        [("c1", "o1", "mug", "2024-01-10", 1, 10.0), ("c1", "o1", "mug", "2024-01-10", 2, 10.0)]
    )
    both = pd.concat([table, extra], ignore_index=True)
    for col in ("customer_id", "order_id", "item_id"):
        both[col] = both[col].astype("category")
    fast = build_interactions(both, AS_OF)
    general = build_interactions(both, AS_OF, since="1900-01-01")
    np.testing.assert_array_equal(fast.user_ids, general.user_ids)
    np.testing.assert_array_equal(fast.item_ids, general.item_ids)
    assert (fast.matrix != general.matrix).nnz == 0 and fast.matrix.dtype == general.matrix.dtype
    tea, mug = fast.item_index()["tea"], fast.item_index()["mug"]
    assert fast.matrix[fast.user_index()["c1"], tea] == 3  # three orders
    assert fast.matrix[fast.user_index()["c1"], mug] == 1  # two lines of one order
