"""Items-due-for-re-purchase features: known answers, sample = full rows, no leakage."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from features.purchases import Purchases
from features.rebuy import (
    MIN_GAPS,
    PRIOR_GAPS,
    REBUY_COLUMNS,
    item_rebuy_gaps,
    rebuy_features,
    usual_gaps,
)
from training.snapshots import UserSnapshots, customer_features

AS_OF = pd.Timestamp("2024-03-01")


def table(rows: list[tuple[str, str, str, str]]) -> pd.DataFrame:
    """Order lines (customer, order, item, day) with quantity 1 and price 10."""
    df = pd.DataFrame(rows, columns=["customer_id", "order_id", "item_id", "ordered_at"])
    df["ordered_at"] = pd.to_datetime(df["ordered_at"], format="ISO8601").astype("datetime64[us]")
    df["quantity"], df["unit_price"], df["is_return"] = 1.0, 10.0, False
    return df


def known_shop() -> pd.DataFrame:
    """Item A is re-bought every 10 days by a, b and c; d bought A once and B once."""
    rows = []
    for c, first in (("a", "2024-01-01"), ("b", "2024-01-05"), ("c", "2024-01-11")):
        for k in range(3):  # purchase days first, +10, +20: two gaps of 10 days each
            day = pd.Timestamp(first) + pd.Timedelta(days=10 * k)
            rows.append((c, f"{c}{k}", "A", str(day.date())))
    rows += [("d", "d0", "A", "2024-02-20"), ("d", "d0", "B", "2024-02-20")]
    rows += [("a", "a9", "A", "2024-01-21")]  # a second line of A on a day a already has
    return table(rows)


def test_item_gaps_known_answer() -> None:
    p = Purchases.of(known_shop(), AS_OF)
    stats = item_rebuy_gaps(p)
    assert stats.loc["A", "gaps"] == 6  # same-day repeats are not gaps
    assert stats.loc["A", "gap_log_sum"] == pytest.approx(6 * np.log(10))
    assert stats.loc["B", "gaps"] == 0
    gaps = usual_gaps(stats, p.items)
    assert gaps[list(p.items).index("A")] == pytest.approx(10.0)  # all gaps equal: no shrinkage
    assert np.isnan(gaps[list(p.items).index("B")])  # fewer than MIN_GAPS gaps


def test_usual_gap_shrinks_rare_items() -> None:
    stats = pd.DataFrame(
        {"gap_log_sum": [MIN_GAPS * np.log(4.0), 100 * np.log(16.0)], "gaps": [MIN_GAPS, 100]},
        index=pd.Index(["rare", "common"]),
    )
    gaps = usual_gaps(stats, stats.index)
    overall = (MIN_GAPS * np.log(4.0) + 100 * np.log(16.0)) / (MIN_GAPS + 100)
    expected = np.exp((MIN_GAPS * np.log(4.0) + PRIOR_GAPS * overall) / (MIN_GAPS + PRIOR_GAPS))
    assert gaps[0] == pytest.approx(expected) and 4.0 < gaps[0] < 16.0


def test_rebuy_features_known_answer() -> None:
    f = rebuy_features(Purchases.of(known_shop(), AS_OF))
    assert list(f.columns) == REBUY_COLUMNS
    # a: last bought A on 2024-01-21, 40 days before as_of: 4x the 10-day gap (overdue)
    assert f.loc["a", "items_due"] == 0 and f.loc["a", "items_overdue_share"] == 1.0
    assert f.loc["a", "due_ratio_min"] == pytest.approx(4.0)
    assert f.loc["a", "next_due_days"] == pytest.approx(30.0)
    assert f.loc["a", "own_rebuy_share"] == 1.0
    assert f.loc["a", "own_due_ratio"] == pytest.approx(4.0)  # own gap 10 days too
    # d: bought A 10 days ago (due now) and B (no usual gap), never re-bought anything
    assert f.loc["d", "items_due"] == 1 and f.loc["d", "items_due_share"] == 1.0
    assert f.loc["d", "due_ratio_min"] == pytest.approx(1.0)
    assert f.loc["d", "own_rebuy_share"] == 0.0 and f["own_due_ratio"].isna()["d"]


def test_no_purchases_gives_an_empty_frame() -> None:
    f = rebuy_features(Purchases.of(known_shop(), "2023-01-01"))
    assert f.empty and list(f.columns) == REBUY_COLUMNS


def shop(n: int = 300, seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for c in range(n):
        t = rng.uniform(0, 200)
        k = 0
        while t < 420:
            for item in rng.choice(12, size=1 + rng.poisson(1), replace=False):
                day = pd.Timestamp("2023-01-01") + pd.Timedelta(days=float(t))
                rows.append((f"c{c}", f"o{c}-{k}", f"i{item}", str(day)))
            k += 1
            t += rng.exponential(30)
    return table(rows)


def test_sample_rows_equal_full_rows_with_all_customers_statistics() -> None:
    orders = shop()
    cache = UserSnapshots(orders, optional=True)
    sample = cache.population(AS_OF, 100)
    assert sample is not None
    cut = AS_OF - pd.DateOffset(months=1)
    part = cache.features(cut, sample)[REBUY_COLUMNS]
    full = cache.features(cut)[REBUY_COLUMNS]
    pd.testing.assert_frame_equal(part, full.loc[part.index].astype(np.float32))


def test_no_leakage_from_lines_at_or_after_as_of() -> None:
    orders = shop()
    cut = pd.Timestamp("2023-11-15")
    before = customer_features(orders, cut, optional=True)
    # rewrite everything from the cutoff on: other items, other customers, other days
    later = orders.loc[orders["ordered_at"] >= cut].copy()
    later["item_id"] = "i0"
    later["ordered_at"] = cut + pd.Timedelta(hours=1)
    extra = table([("c0", "new", "i5", str(cut)), ("zz", "new2", "i1", "2024-01-01 00:00:00")])
    changed = pd.concat([orders.loc[orders["ordered_at"] < cut], later, extra], ignore_index=True)
    after = customer_features(changed, cut, optional=True)
    pd.testing.assert_frame_equal(before, after)
    assert set(REBUY_COLUMNS) <= set(after.columns)
    # the rewritten lines do count once the cutoff is after them
    later_cut = cut + pd.Timedelta(days=60)
    assert not customer_features(changed, later_cut, optional=True).equals(
        customer_features(orders, later_cut, optional=True)
    )
