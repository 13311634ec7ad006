"""The synthetic shop: determinism, the data contract, and the behaviours it is meant to show."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import date
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from features import synthetic
from features.io import load_dataset
from features.schema import (
    CATEGORY,
    CHANNEL,
    CUSTOMER_ID,
    DISCOUNT,
    IS_RETURN,
    ITEM_ID,
    ORDER_ID,
    ORDERED_AT,
    QUANTITY,
    SIGNED_UP_AT,
    UNIT_PRICE,
)
from features.synthetic import (
    ShopConfig,
    customers_table,
    generate,
    items_table,
    write_shop,
)

SMALL = ShopConfig(n_customers=1_500, n_items=400, seed=11, chunk_customers=500)


def _orders(config: ShopConfig) -> pd.DataFrame:
    return pd.concat(list(generate(config)), ignore_index=True)


@pytest.fixture(scope="module")
def shop_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synthetic") / "shop"
    write_shop(SMALL, out, progress=False)
    return out


@pytest.fixture(scope="module")
def orders() -> pd.DataFrame:
    return _orders(SMALL)


@pytest.fixture(scope="module")
def lines(orders: pd.DataFrame) -> pd.DataFrame:
    """Purchase lines with the item's category and whether it is a consumable."""
    items = items_table(SMALL)
    kinds = {c.name: c for c in synthetic.CATEGORIES}
    out = orders[~orders[IS_RETURN]].merge(items[[ITEM_ID, CATEGORY]], on=ITEM_ID)
    out["consumable"] = out[CATEGORY].map(lambda c: kinds[c].consumable).astype(bool)
    out["gift"] = out[CATEGORY].map(lambda c: kinds[c].gift).astype(bool)
    return out


# ----------------------------------------------------------------------------- determinism


def test_same_seed_gives_identical_tables() -> None:
    config = replace(SMALL, n_customers=400, chunk_customers=150)
    pd.testing.assert_frame_equal(_orders(config), _orders(config))
    pd.testing.assert_frame_equal(items_table(config), items_table(config))
    pd.testing.assert_frame_equal(customers_table(config), customers_table(config))


def test_different_seed_gives_different_orders() -> None:
    a = _orders(replace(SMALL, n_customers=400))
    b = _orders(replace(SMALL, n_customers=400, seed=SMALL.seed + 1))
    assert len(a) != len(b) or not a.equals(b)


# ----------------------------------------------------------------------------- contract


def test_written_shop_loads_without_quarantine(shop_dir: Path) -> None:
    counts = json.loads((shop_dir / synthetic.SHOP_FILE).read_text())["counts"]
    parts = sorted((shop_dir / synthetic.ORDERS_DIR).glob("part-*.parquet"))
    assert len(parts) == SMALL.n_chunks == 3

    data = load_dataset(shop_dir)

    assert {name: len(q) for name, q in data.quarantine.items()} == {
        "items": 0,
        "customers": 0,
        "orders": 0,
    }
    assert len(data.orders) == counts["order_lines"]
    assert data.orders[ORDER_ID].nunique() == counts["orders"]
    assert int(data.orders[IS_RETURN].sum()) == counts["return_lines"]
    assert data.items is not None and len(data.items) == SMALL.n_items == counts["items"]
    assert data.customers is not None and len(data.customers) == SMALL.n_customers
    rules = {r.rule for r in data.reports[0].rules}
    assert rules <= {"return"}, rules  # no duplicates, no unknown items


def test_shop_json_round_trips_the_config(shop_dir: Path) -> None:
    meta = json.loads((shop_dir / synthetic.SHOP_FILE).read_text())
    assert ShopConfig.from_dict(meta["config"]) == SMALL


def test_parquet_types(shop_dir: Path) -> None:
    part = pq.read_schema(shop_dir / synthetic.ORDERS_DIR / "part-00000.parquet")
    for col in (CUSTOMER_ID, ITEM_ID):
        assert pa.types.is_dictionary(part.field(col).type), col
    assert pa.types.is_large_string(part.field(ORDER_ID).type)  # as in a shop's export
    orders = pd.read_parquet(shop_dir / synthetic.ORDERS_DIR)
    assert all(isinstance(orders[c].dtype, pd.CategoricalDtype) for c in (CUSTOMER_ID, ITEM_ID))
    assert pd.api.types.is_datetime64_dtype(orders[ORDERED_AT])
    for col in (QUANTITY, UNIT_PRICE, DISCOUNT):
        assert orders[col].dtype == np.float64, col
    assert orders[IS_RETURN].dtype == bool
    assert set(orders[CHANNEL].astype(str)) == {"web", "app"}
    items = pd.read_parquet(shop_dir / synthetic.ITEMS_FILE)
    customers = pd.read_parquet(shop_dir / synthetic.CUSTOMERS_FILE)
    assert isinstance(items[ITEM_ID].dtype, pd.CategoricalDtype)
    assert isinstance(customers[CUSTOMER_ID].dtype, pd.CategoricalDtype)


def test_values_are_in_range(orders: pd.DataFrame) -> None:
    assert (orders[UNIT_PRICE] > 0).all()
    assert orders[DISCOUNT].between(0, 1, inclusive="left").all()
    assert (orders[DISCOUNT] > 0).mean() > 0.03
    assert (orders[QUANTITY] != 0).all()
    assert orders[ORDERED_AT].min() >= pd.Timestamp(SMALL.start)
    assert orders[ORDERED_AT].max() < pd.Timestamp(SMALL.end)
    purchases = orders.loc[~orders[IS_RETURN], QUANTITY]
    assert purchases.between(1, 3).mean() > 0.85


def test_id_formats_and_order_integrity(orders: pd.DataFrame) -> None:
    assert orders[CUSTOMER_ID].astype(str).str.fullmatch(r"C\d{6}").all()
    assert orders[ITEM_ID].astype(str).str.fullmatch(r"I\d{5}").all()
    assert orders[ORDER_ID].astype(str).str.fullmatch(r"O\d{7}").all()
    per_order = orders.groupby(ORDER_ID, observed=True).agg(
        customers=(CUSTOMER_ID, "nunique"),
        times=(ORDERED_AT, "nunique"),
        kinds=(IS_RETURN, "nunique"),
    )
    assert (per_order == 1).all().all()  # one customer, one timestamp, purchase or return
    assert not orders.duplicated([ORDER_ID, ITEM_ID]).any()


def test_no_order_before_signup(orders: pd.DataFrame) -> None:
    customers = customers_table(SMALL).set_index(CUSTOMER_ID)[SIGNED_UP_AT]
    first = orders.groupby(CUSTOMER_ID, observed=True)[ORDERED_AT].min()
    assert (first >= customers.reindex(first.index.astype(str)).to_numpy()).all()


def test_returns_follow_a_purchase_in_a_separate_order(orders: pd.DataFrame) -> None:
    returns = orders[orders[IS_RETURN]]
    assert ((orders[QUANTITY] < 0) == orders[IS_RETURN]).all()
    assert 0.02 <= len(returns) / len(orders) <= 0.05
    bought = orders[~orders[IS_RETURN]]
    assert not set(returns[ORDER_ID].astype(str)) & set(bought[ORDER_ID].astype(str))
    first_buy = (
        bought.groupby([CUSTOMER_ID, ITEM_ID], observed=True)[ORDERED_AT].min().rename("bought")
    )
    matched = returns.merge(first_buy.reset_index(), on=[CUSTOMER_ID, ITEM_ID], how="left")
    assert (matched["bought"] < matched[ORDERED_AT]).all()


# ----------------------------------------------------------------------------- behaviour


def test_zipf_top_tenth_of_items_sells_most(lines: pd.DataFrame) -> None:
    volume = lines[ITEM_ID].value_counts()
    assert volume.iloc[: SMALL.n_items // 10].sum() / volume.sum() > 0.5


def test_consumables_are_rebought_more_than_durables(lines: pd.DataFrame) -> None:
    pairs = lines.groupby([CUSTOMER_ID, ITEM_ID], observed=True).agg(
        orders=(ORDER_ID, "nunique"), consumable=("consumable", "first")
    )
    rebought = (pairs["orders"] >= 2).groupby(pairs["consumable"]).mean()
    assert rebought[True] > 0.3
    assert rebought[True] > 5 * rebought[False]


def test_gift_categories_peak_in_q4(lines: pd.DataFrame) -> None:
    month = lines[ORDERED_AT].dt.month
    gifts = lines[lines["gift"]]
    per_day_q4 = (gifts[ORDERED_AT].dt.month.isin([11, 12])).sum() / 61
    per_day_summer = (gifts[ORDERED_AT].dt.month.isin([6, 7, 8])).sum() / 92
    assert per_day_q4 > 1.5 * per_day_summer
    gift_share_dec = lines.loc[month == 12, "gift"].mean()
    assert gift_share_dec > lines.loc[month.isin([6, 7, 8]), "gift"].mean() + 0.05


def test_weekday_pattern(orders: pd.DataFrame) -> None:
    per_order = orders.drop_duplicates(ORDER_ID)[ORDERED_AT].dt.dayofweek.value_counts()
    assert per_order[0] > per_order[5]  # Monday busier than Saturday


def test_some_customers_drop_out(orders: pd.DataFrame) -> None:
    """Frequent buyers of the first year that never order in the last half year."""
    times = orders.drop_duplicates(ORDER_ID).set_index(CUSTOMER_ID)[ORDERED_AT]
    first_year = times[times < pd.Timestamp("2024-01-01")].groupby(level=0, observed=True).size()
    last = times.groupby(level=0, observed=True).max()
    frequent = first_year[first_year >= 8].index
    stopped = (last[frequent] < pd.Timestamp("2024-07-01")).mean()
    assert len(frequent) > 50
    assert stopped > 0.1  # a Poisson buyer at >= 8 orders a year stops for 6 months ~2% of the time


def test_list_prices_change_over_time(lines: pd.DataFrame) -> None:
    full_price = lines[lines[DISCOUNT] == 0]
    prices = full_price.groupby(ITEM_ID, observed=True)[UNIT_PRICE].nunique()
    assert (prices > 1).mean() > 0.3


def test_demo_default_size() -> None:
    config = ShopConfig()
    n = sum(len(frame) for frame in generate(config))
    assert 100_000 <= n <= 200_000
    assert (config.n_customers, config.n_items, config.n_days) == (5_000, 500, 731)


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_customers": -5}, "n_customers must be >= 1"),
        ({"n_items": 0}, "n_items must be >= 1"),
        ({"chunk_customers": 0}, "chunk_customers must be >= 1"),
        ({"start": "2024-01-01", "end": "2023-01-01"}, "must be after start"),
        ({"start": "2024-01-01", "end": "2024-01-01"}, "must be after start"),
        ({"seed": -1}, "seed must be >= 0"),
        ({"rate_scale": 0.0}, "rate_scale must be > 0"),
        ({"return_scale": -0.1}, "return_scale must be >= 0"),
    ],
)
def test_bad_config_raises(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ShopConfig(**kwargs)  # type: ignore[arg-type]


def test_unknown_config_key_raises() -> None:
    with pytest.raises(ValueError, match="unknown ShopConfig field"):
        ShopConfig.from_dict({"n_customers": 10, "customers": 10})


def test_tiny_shop_works(tmp_path: Path) -> None:
    """Fewer items than categories, one customer, a short window."""
    config = ShopConfig(
        n_customers=3, n_items=2, start=date(2024, 1, 1), end=date(2024, 3, 1), seed=1
    )
    counts = write_shop(config, tmp_path / "tiny", progress=False)
    assert counts["items"] == 2 and counts["customers"] == 3
    assert set(items_table(config)[CATEGORY].astype(str)) <= {"coffee", "tea"}


def test_interrupted_write_keeps_the_previous_shop(
    shop_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "shop"
    small = replace(SMALL, n_customers=200)
    write_shop(small, target, progress=False)
    before = sorted(p.relative_to(target) for p in target.rglob("*"))

    def broken(config: ShopConfig):  # type: ignore[no-untyped-def]
        yield next(iter(generate(config)))
        raise RuntimeError("disk full")

    monkeypatch.setattr(synthetic, "generate", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        write_shop(replace(small, chunk_customers=50), target, progress=False)
    assert sorted(p.relative_to(target) for p in target.rglob("*")) == before
    assert [p.name for p in tmp_path.iterdir()] == ["shop"]
