"""Ordering-habit features: known answers and no leakage from lines at or after as_of."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.habits import HABIT_COLUMNS, habit_features
from features.purchases import Purchases
from training.snapshots import customer_features

AS_OF = pd.Timestamp("2024-03-01")


def table(rows: list[tuple[str, str, str, str, float]]) -> pd.DataFrame:
    """Order lines (customer, order, item, time, quantity) at price 10; negative = a return."""
    df = pd.DataFrame(
        rows, columns=["customer_id", "order_id", "item_id", "ordered_at", "quantity"]
    )
    df["ordered_at"] = pd.to_datetime(df["ordered_at"], format="ISO8601").astype("datetime64[us]")
    df["unit_price"] = 10.0
    df["is_return"] = df["quantity"] < 0
    return df


def known_shop() -> pd.DataFrame:
    return table(
        [
            # a: three Mondays at 10h, 10h and 12h; the last order has 1 line, the others 2
            ("a", "a1", "x", "2024-01-01T10:00", 1.0),
            ("a", "a1", "y", "2024-01-01T10:00", 1.0),
            ("a", "a2", "x", "2024-01-08T10:00", 1.0),
            ("a", "a2", "y", "2024-01-08T10:00", 1.0),
            ("a", "a3", "x", "2024-01-15T12:00", 1.0),
            ("a", "r1", "x", "2024-02-20T00:00", -1.0),  # a return 10 days before as_of
            # b: a Tuesday and a Saturday
            ("b", "b1", "x", "2024-01-02T09:00", 3.0),
            ("b", "b2", "x", "2024-01-06T09:00", 1.0),
            ("b", "r2", "x", "2024-03-05T00:00", -1.0),  # a return after as_of: unseen
        ]
    )


def test_habits_known_answer() -> None:
    f = habit_features(Purchases.of(known_shop(), AS_OF))
    assert list(f.columns) == HABIT_COLUMNS and list(f.index) == ["a", "b"]
    assert f.loc["a", "weekday_mode_share"] == 1.0
    assert f.loc["b", "weekday_mode_share"] == 0.5
    assert f.loc["a", "hour_std"] == pytest.approx(np.std([10, 10, 12]))
    assert f.loc["a", "last_lines_ratio"] == pytest.approx(1 / (5 / 3))
    assert f.loc["a", "last_value_ratio"] == pytest.approx(10 / (50 / 3))
    assert f.loc["b", "last_value_ratio"] == pytest.approx(10 / 20)
    assert f.loc["a", "days_since_return"] == pytest.approx(10.0)
    assert f["days_since_return"].isna()["b"]  # its return is on or after as_of


def test_habits_do_not_read_lines_at_or_after_as_of() -> None:
    orders = known_shop()
    later = table(
        [
            ("a", "a9", "z", "2024-03-01T23:00", 9.0),
            ("a", "r9", "x", "2024-03-02T00:00", -1.0),
            ("c", "c9", "z", "2024-04-01T08:00", 1.0),
        ]
    )
    before = customer_features(orders, AS_OF, optional=True)
    after = customer_features(pd.concat([orders, later], ignore_index=True), AS_OF, optional=True)
    pd.testing.assert_frame_equal(before[HABIT_COLUMNS], after[HABIT_COLUMNS])
    moved = habit_features(
        Purchases.of(pd.concat([orders, later], ignore_index=True), "2024-05-01")
    )
    assert moved["days_since_return"]["a"] != before["days_since_return"]["a"]
