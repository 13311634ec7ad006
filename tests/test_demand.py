"""Demand forecasting: features, estimator contract, artifact, planner maths, protocol D counts."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from features.demand import WeeklyDemand, week_ahead, week_ending, weekly_demand
from features.schema import (
    CATEGORY,
    CUSTOMER_ID,
    IS_RETURN,
    ITEM_ID,
    ITEM_NAME,
    ORDER_ID,
    ORDERED_AT,
    QUANTITY,
    STOCK_ON_HAND,
    UNIT_PRICE,
)
from shopml.artifacts.demand import DemandArtifact
from shopml.artifacts.inventory import plan
from training.demand import (
    CLASSES,
    COVERAGE_TAIL,
    KEY_SHRINK,
    QUANT_SCALES,
    DemandModel,
    ItemStatics,
    Validation,
    _interval_scale,
    _pinball_scale,
    _point_search,
    _quant_search,
    choose_combination,
    closure_factors,
    december_ratio,
    demand_class,
    item_keys,
    item_season_phi,
    pooled_ratio,
    ramp,
    ramp_phi,
    remaining_ramp,
    sample_items,
    season_index,
    season_phi,
    season_position,
    simplex,
)

START = pd.Timestamp("2010-12-01")
AS_OF = pd.Timestamp("2011-09-05")  # last complete week ends 2011-09-04


def xmas_multiplier(day: pd.Timestamp) -> float:
    """Known seasonal pattern: 4x in early December, 1x in January, log-linear ramp in between."""
    if day.month == 12 and day.day <= 24:
        return 4.0
    start = pd.Timestamp(year=day.year, month=1, day=1)
    phi = min(
        max((day - start).days / (pd.Timestamp(year=day.year, month=12, day=1) - start).days, 0), 1
    )
    return float(4.0**phi) if day.month != 12 else 1.0


def synthetic_shop(
    seed: int = 0, n_items: int = 24, end: str = "2011-12-01"
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Seeded daily orders: half the items seasonal (Christmas), half flat; Poisson units."""
    rng = np.random.default_rng(seed)
    days = pd.date_range(START, end, freq="D")
    rows: list[tuple[str, str, str, pd.Timestamp, float, float]] = []
    base = rng.uniform(0.6, 2.0, n_items)
    for d in days:
        mult = xmas_multiplier(d)
        for i in range(n_items):
            rate = base[i] * (mult if i % 2 == 0 else 1.0)
            k = rng.poisson(rate)
            if k:
                rows.append(
                    (
                        f"c{rng.integers(50)}",
                        f"o{len(rows)}",
                        f"{10000 + i}",
                        d + pd.Timedelta(hours=10),
                        float(k),
                        1.0 + i % 3,
                    )
                )
    orders = pd.DataFrame(
        rows, columns=[CUSTOMER_ID, ORDER_ID, ITEM_ID, ORDERED_AT, QUANTITY, UNIT_PRICE]
    )
    orders[IS_RETURN] = False
    items = pd.DataFrame(
        {
            ITEM_ID: [f"{10000 + i}" for i in range(n_items)],
            ITEM_NAME: [f"item {i}" for i in range(n_items)],
            CATEGORY: ["XMAS" if i % 2 == 0 else "PLAIN" for i in range(n_items)],
        }
    )
    return orders, items


@pytest.fixture(scope="module")
def shop() -> tuple[pd.DataFrame, pd.DataFrame]:
    return synthetic_shop()


def small_model(**kw: object) -> DemandModel:
    return DemandModel(num_rounds=15, num_leaves=7, min_data_in_leaf=20, num_threads=1, **kw)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def fitted(shop: tuple[pd.DataFrame, pd.DataFrame]) -> DemandModel:
    orders, items = shop
    return small_model().fit(orders, AS_OF, items)


# --------------------------------------------------------------------------------- features
def test_weeks_end_on_sunday_and_partial_weeks_dropped(
    shop: tuple[pd.DataFrame, pd.DataFrame],
) -> None:
    wd = weekly_demand(shop[0], AS_OF)
    assert (wd.weeks.dayofweek == 6).all()
    assert wd.weeks[0] == pd.Timestamp("2010-12-12")  # 2010-12-01 is a Wednesday
    assert wd.weeks[-1] == pd.Timestamp("2011-09-04")
    assert week_ending(
        pd.Series(pd.to_datetime(["2011-09-04 23:00", "2011-09-05 00:00"]))
    ).tolist() == [
        pd.Timestamp("2011-09-04"),
        pd.Timestamp("2011-09-11"),
    ]


def test_weekly_demand_totals(shop: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    orders = shop[0]
    wd = weekly_demand(orders, AS_OF)
    inside = orders[(orders[ORDERED_AT] >= "2010-12-06") & (orders[ORDERED_AT] < "2011-09-05")]
    assert wd.units.sum() == pytest.approx(inside[QUANTITY].sum())


# ------------------------------------------------------------------------------- estimator
def test_forecast_shapes_and_quantiles(fitted: DemandModel) -> None:
    art = fitted.artifact_
    ids = list(art.items[:5])
    out = fitted.forecast(ids, 12)
    assert len(out) == 5 * 12
    assert list(out.columns) == [
        "item_id", "week", "h", "p10", "p50", "p90", "point", "share_ahead"
    ]  # fmt: skip
    assert (
        out["week"].iloc[:12].reset_index(drop=True) == art.weeks.to_series().reset_index(drop=True)
    ).all()
    q = art.quantiles
    assert (q >= 0).all() and (q[0] <= q[1]).all() and (q[1] <= q[2]).all()
    assert (art.point >= 0).all()
    assert len(fitted.forecast(ids, 3)) == 15


def test_save_load_round_trip(fitted: DemandModel, tmp_path: Path) -> None:
    ids = list(fitted.artifact_.items)
    fitted.save(tmp_path / "m")
    assert not list((tmp_path / "m").glob("*.pkl"))
    loaded = DemandModel.load(tmp_path / "m")
    pd.testing.assert_frame_equal(loaded.forecast(ids, 12), fitted.forecast(ids, 12))
    art = DemandArtifact.load(tmp_path / "m")
    assert art.origin == pd.Timestamp("2011-09-04")
    assert list(art.boosters) == ["lgb_raw"] and len(art.boosters["lgb_raw"]) == 3


def test_item_table_stock_is_the_forecast_endpoints_default(
    shop: tuple[pd.DataFrame, pd.DataFrame], tmp_path: Path
) -> None:
    """The items' stock_on_hand reaches the served model (the API documented it as the default
    but the artifact never carried it, so every item's stock was unknown)."""
    from serving.runtime import DemandView

    orders, items = shop
    ids = [str(i) for i in items[ITEM_ID]]
    with_stock = items.assign(**{STOCK_ON_HAND: [7.0, np.nan] + [3.0] * (len(items) - 2)})
    model = small_model().fit(orders, AS_OF, with_stock)
    model.save(tmp_path / "m")
    stock = DemandArtifact.load(tmp_path / "m").meta["stock_on_hand"]
    assert stock[ids[0]] == 7.0 and ids[1] not in stock  # a blank stock stays unknown
    view = DemandView(DemandArtifact.load(tmp_path / "m"), "1")
    out = view.forecast([ids[0], ids[1]], 4, None, None, None)["items"]
    assert [row["stock_on_hand"] for row in out] == [7.0, None]
    assert out[0]["stockout_probability"] is not None and out[1]["stockout_probability"] is None
    override = view.forecast([ids[0]], 4, None, None, {ids[0]: 1000.0})["items"][0]
    assert override["stock_on_hand"] == 1000.0
    assert small_model().fit(orders, AS_OF, items).artifact_.meta["stock_on_hand"] == {}


def test_deterministic(shop: tuple[pd.DataFrame, pd.DataFrame], fitted: DemandModel) -> None:
    again = small_model().fit(shop[0], AS_OF, shop[1])
    np.testing.assert_array_equal(again.artifact_.quantiles, fitted.artifact_.quantiles)
    np.testing.assert_array_equal(again.artifact_.point, fitted.artifact_.point)


def test_no_leakage(shop: tuple[pd.DataFrame, pd.DataFrame], fitted: DemandModel) -> None:
    orders, items = shop
    changed = orders.copy()
    late = changed[ORDERED_AT] >= AS_OF
    changed.loc[late, QUANTITY] = changed.loc[late, QUANTITY] * 50
    again = small_model().fit(changed, AS_OF, items)
    np.testing.assert_array_equal(again.artifact_.quantiles, fitted.artifact_.quantiles)
    cut = small_model().fit(orders[orders[ORDERED_AT] < AS_OF], AS_OF, items)
    np.testing.assert_array_equal(cut.artifact_.point, fitted.artifact_.point)


def test_recovers_known_seasonal_ramp(shop: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    """Half the items sell 4x more in December: from September the forecast rises for them only.

    No validation window of this shop reaches October, so the ramp runs at its fixed strength.
    """
    orders, items = shop
    art = small_model().fit(orders, AS_OF, items).artifact_
    assert art.meta["combination"]["gamma"] == 1.0
    season = np.array([int(i) % 2 == 0 for i in art.items])
    mean = art.point
    ramp_xmas = mean[season, 8:].sum() / mean[season, :4].sum()
    ramp_flat = mean[~season, 8:].sum() / mean[~season, :4].sum()
    assert ramp_xmas > 1.15 and ramp_xmas > ramp_flat + 0.1
    assert 0.8 < ramp_flat < 1.25
    # backtest: the forecast beats last week's value on the seasonal items
    wd = weekly_demand(orders, AS_OF + pd.Timedelta(weeks=12), start="2011-09-11")
    truth = wd.frame().reindex(art.items).fillna(0).to_numpy()[:, :12]
    hist = weekly_demand(orders, AS_OF).frame().reindex(art.items).to_numpy()
    naive_err = np.abs(truth[season] - hist[season, -1:]).mean()
    assert np.abs(truth[season] - art.quantiles[1][season]).mean() < naive_err


def test_unit_model_round_trip(shop: tuple[pd.DataFrame, pd.DataFrame], tmp_path: Path) -> None:
    model = small_model(models=("lgb", "lgb_raw")).fit(shop[0], AS_OF, shop[1])
    assert model.combination_.quant_names == ["lgb", "lgb_raw", "emp"]
    model.save(tmp_path / "m")
    loaded = DemandModel.load(tmp_path / "m")
    assert loaded.models == ("lgb", "lgb_raw")
    assert sorted(loaded.artifact_.boosters) == ["lgb", "lgb_raw"]
    q = loaded.artifact_.quantiles
    assert (q >= 0).all() and (q[0] <= q[1]).all() and (q[1] <= q[2]).all()


def test_demand_classes() -> None:
    weekly = np.ones(26) * 5
    erratic = np.tile([1.0, 20.0], 13)
    intermittent = np.where(np.arange(26) % 3 == 0, 4.0, 0.0)
    lumpy = np.where(np.arange(26) % 3 == 0, np.tile([1.0, 30.0], 13), 0.0)
    hist = np.stack([weekly, erratic, intermittent, lumpy, np.zeros(26)])
    names = [CLASSES[c] for c in demand_class(hist)]
    assert names == ["smooth", "erratic", "intermittent", "lumpy", "intermittent"]


def test_season_position_is_tied_to_the_calendar() -> None:
    assert season_position(pd.Timestamp("2011-06-05")) == 0.0
    assert season_position(pd.Timestamp("2011-10-01")) == 0.0
    assert season_position(pd.Timestamp("2011-11-08")) == pytest.approx(38 / 75)
    assert season_position(pd.Timestamp("2011-12-20")) == 1.0
    # from June nothing of the season within 8 weeks; from 2 October the rise still ahead only
    assert (ramp_phi(pd.Timestamp("2011-06-05"), 8) == 0).all()
    phi = ramp_phi(pd.Timestamp("2011-10-02"), 12)
    assert phi[0] == pytest.approx(7 / 75) and phi[-1] == pytest.approx(1 - 1 / 75)
    assert (np.diff(phi) >= 0).all()


def test_remaining_ramp_takes_off_the_lift_already_reached() -> None:
    """Two December sellers (4x): one still at its off-season level, one already 4x up."""
    weeks = pd.date_range("2010-12-05", "2011-09-04", freq="7D")
    dec = np.asarray(weeks.month == 12)
    base = np.full((6, len(weeks)), 10.0)
    base[:2, dec] = 40.0
    base[1, -8:] = 40.0  # the season has started for item 1
    statics = ItemStatics(category=np.arange(6), first_week=np.zeros(6, dtype=int))
    t = len(weeks) - 1
    ratio = december_ratio(base, weeks, t, statics, base[:, -12:].mean(axis=1))
    left = remaining_ramp(base, weeks, t, statics, ratio)
    assert ratio[0] == pytest.approx(ratio[1]) and ratio[0] > 0.5
    assert left[0] == pytest.approx(ratio[0], abs=0.05)  # nothing reached yet
    assert left[1] < 0.25 * ratio[1]  # mostly reached
    assert (left[2:] <= ratio[2:] + 1e-12).all()


def test_season_pace_is_carried_forward_from_the_data() -> None:
    """20 December sellers (December e^1.6 x their off-season level) and 20 flat items.

    In the last 8 weeks the seasonal items stand at exp(0.5 x their December log ratio): the
    season index is 0.5 and, from 0 eight weeks earlier, the pace 0.5 / 8 per week, so the
    share of the remaining lift reached h weeks ahead is 0.125 h (the whole of it after 8
    weeks), above the calendar prior (0 before October). Without the lift: the prior exactly.
    """
    weeks = pd.date_range("2010-12-05", "2011-08-28", freq="7D")
    in_dec = np.asarray((weeks.month == 12) & (weeks.day <= 24))
    units = np.full((40, len(weeks)), 1000.0)
    units[:20, in_dec] = 1000.0 * np.exp(1.6)
    statics = ItemStatics(category=np.zeros(40, dtype=int), first_week=np.zeros(40, dtype=int))
    t = len(weeks) - 1
    flat = units.copy()
    dec = december_ratio(units, weeks, t, statics, units[:, -12:].mean(axis=1))
    units[:20, -8:] = 1000.0 * np.exp(0.5 * dec[:20, None])
    assert dec[:20] == pytest.approx(1.6, abs=0.01) and dec[20:] == pytest.approx(0.0, abs=0.01)
    assert season_index(units, weeks, t, statics, dec) == pytest.approx(0.5, abs=0.01)
    phi = season_phi(units, weeks, t, statics, dec, 10)
    assert phi == pytest.approx(np.minimum(0.125 * np.arange(1, 11), 1.0), abs=0.02)
    assert season_index(flat, weeks, t, statics, dec) == pytest.approx(0.0, abs=1e-6)
    prior = ramp_phi(weeks[t], 10)
    assert np.array_equal(season_phi(flat, weeks, t, statics, dec, 10), prior)
    assert prior[:4].max() == 0.0 and prior[-1] > 0.0
    # an origin in late November: the pace stops at New Year, as the calendar prior does
    late = pd.date_range("2010-12-05", "2011-11-27", freq="7D")
    u = np.full((40, len(late)), 1000.0)
    u[:20, np.asarray((late.month == 12) & (late.day <= 24))] = 1000.0 * np.exp(1.6)
    u[:20, -8:] = 1000.0 * np.exp(0.5 * 1.6)
    tl = len(late) - 1
    d = december_ratio(u, late, tl, statics, u[:, -12:].mean(axis=1))
    phi = season_phi(u, late, tl, statics, d, 8)
    after_new_year = np.asarray(
        (late[tl] + pd.to_timedelta(7 * np.arange(1, 9), unit="D")).year > 2011
    )
    assert after_new_year.sum() == 4 and (phi[after_new_year] == 0.0).all()
    assert (phi[~after_new_year] >= ramp_phi(late[tl], 8)[~after_new_year]).all()
    assert phi[~after_new_year] == pytest.approx(0.125 * np.arange(1, 5), abs=0.02)


def test_item_pace_follows_each_items_own_rise() -> None:
    """Known answer, origin 2011-10-02: 10 early December sellers with 10x the volume stand at
    exp(0.9 x their December log ratio 1.6) in the last 8 weeks (at their off-season level
    before), 10 late ones have not risen yet, 20 flat items. The shop-wide season index is
    0.87 with a pace of 0.11 a week, so the shop's share of the remaining lift is 1 from
    week 2 on for every item (the late sellers' whole December lift by mid-October). Per item:
    an early seller's rise (0.18 a week against 0.16 left) reaches what is left within a week;
    a late seller, which has not risen, follows the calendar prior (7 / 75 a week from 1
    October). When every December seller rises alike (the pace test above), each item gets the
    shop's share; before its progress can be measured twice, the shop's share too."""
    weeks = pd.date_range("2010-12-05", "2011-10-02", freq="7D")
    in_dec = np.asarray((weeks.month == 12) & (weeks.day <= 24))
    base = np.r_[np.full(10, 10_000.0), np.full(30, 1000.0)]
    units = np.repeat(base[:, None], len(weeks), axis=1)
    units[:20, in_dec] *= np.exp(1.6)
    statics = ItemStatics(category=np.zeros(40, dtype=int), first_week=np.zeros(40, dtype=int))
    t = len(weeks) - 1
    dec = december_ratio(units, weeks, t, statics, units[:, -12:].mean(axis=1))
    units[:10, -8:] *= np.exp(0.9 * 1.6)
    assert dec[:20] == pytest.approx(1.6, abs=0.01)
    shop = season_phi(units, weeks, t, statics, dec, 8)
    assert season_index(units, weeks, t, statics, dec) == pytest.approx(0.867, abs=0.01)
    assert (shop[1:] == 1.0).all()
    phi = item_season_phi(units, weeks, t, statics, dec, 8)
    prior = ramp_phi(weeks[t], 8)
    assert phi.shape == (40, 8)
    assert phi[:10] == pytest.approx(np.ones((10, 8)), abs=1e-9)  # early: own pace, fast
    assert phi[10:20] == pytest.approx(np.tile(prior, (10, 1)), abs=1e-9)  # late: the prior
    assert prior[0] == pytest.approx(7 / 75) and prior[-1] < 0.8
    # the ramp a late seller gets: exp(1.6 x prior), not exp(1.6) from week 2
    left = np.maximum(remaining_ramp(units, weeks, t, statics, dec), 0.0)
    assert left[10:20] == pytest.approx(1.6, abs=0.02) and left[:10].max() < 0.25
    # all December sellers alike (index 0.5, pace 0.0625 a week): the shop's share for each
    alike = np.repeat(base[:, None], len(weeks), axis=1)
    alike[:20, in_dec] *= np.exp(1.6)
    alike[:20, -8:] *= np.exp(0.5 * 1.6)
    assert item_season_phi(alike, weeks, t, statics, dec, 8)[:20] == pytest.approx(
        np.tile(season_phi(alike, weeks, t, statics, dec, 8), (20, 1)), abs=0.02
    )
    # an origin in May: no progress 8 weeks earlier to measure, so the shop's share
    tm = int(np.flatnonzero(weeks == pd.Timestamp("2011-05-29"))[0])
    early = item_season_phi(units[:, : tm + 1], weeks, tm, statics, dec, 8)
    assert np.array_equal(
        early, np.tile(season_phi(units[:, : tm + 1], weeks, tm, statics, dec, 8), (40, 1))
    )


def test_item_keys_are_name_words_and_category() -> None:
    keys = item_keys(["PAPER CHAIN KIT 50S CHRISTMAS", "Star tree-light", ""], ["KIT", "x", "x"])
    assert keys.shape[0] == 3 and keys.sum(axis=1).A1.tolist() == [5.0, 4.0, 1.0]
    # "50S" (digits) and 2-letter words are no keys; items 1 and 2 share only their category
    assert (keys[1].multiply(keys[2])).sum() == 1.0
    assert (keys[0].multiply(keys[1])).sum() == 0.0


def test_pooled_ratio_shares_a_season_through_a_common_word() -> None:
    """Two known Christmas items (ratio 2) and two plain ones (0); two new items, 0 known."""
    keys = item_keys(
        ["CHRISTMAS TREE", "CHRISTMAS STAR", "WHITE MUG", "BLUE MUG", "CHRISTMAS BELL", "RED"],
        ["a"] * 6,
    )
    raw = np.array([2.0, 2.0, 0.0, 0.0, 0.0, 0.0])
    known = np.array([True, True, True, True, False, False])
    prior = pooled_ratio(keys, raw, known)
    overall = 1.0
    christmas = (4.0 + KEY_SHRINK * overall) / (2 + KEY_SHRINK)  # 1.5
    w_xmas, w_cat = 2 / (2 + KEY_SHRINK), 4 / (4 + KEY_SHRINK)
    expected_bell = (w_xmas * christmas + w_cat * overall) / (w_xmas + w_cat)
    assert prior[4] == pytest.approx(expected_bell)
    assert prior[5] == pytest.approx(overall)  # only the category, whose mean is the overall
    assert prior[4] > prior[5] > prior[2]


def test_simple_components_include_the_26_week_median() -> None:
    from training.demand import component_names, components

    weeks = pd.date_range("2011-01-02", periods=40, freq="7D")
    rng = np.random.default_rng(3)
    units = rng.poisson(rng.uniform(0.3, 5.0, (5, 1)), (5, 40)).astype(float)
    wd = WeeklyDemand(pd.Index([f"i{k}" for k in range(5)]), weeks, units, np.ones_like(units))
    statics = ItemStatics(category=np.zeros(5, dtype=np.int64), first_week=np.zeros(5, dtype=int))
    comp = components(wd, 35, statics, np.arange(5), {}, 4)
    _, point_names = component_names([])
    assert point_names[-1] == "med26" and len(point_names) == comp.point.shape[0]
    expected = np.median(units[:, 10:36], axis=1)
    assert np.allclose(comp.point[-1], expected[:, None])


def test_winsorise_caps_bulk_weeks_at_a_multiple_of_the_typical_week() -> None:
    from training.demand import winsorise

    hist = np.array(
        [
            [1.0, 2.0, 2.0, 0.0, 50.0],  # typical selling week 2 -> cap 6
            [0.0, 0.0, 0.0, 0.0, 0.0],  # never sold: stays 0
            [0.0, 0.0, 0.5, 0.0, 2.0],  # typical 1.25 -> cap 3.75: nothing capped
            [0.0, 0.3, 0.0, 0.0, 3.0],  # typical 1.65 -> cap 4.95: nothing capped
        ]
    )
    out = winsorise(hist, 3.0)
    expected = hist.copy()
    expected[0, 4] = 6.0
    assert np.allclose(out, expected)
    # typical week 0.2 is floored at 1 unit: cap 3
    assert np.allclose(winsorise(np.array([[0.0, 0.2, 0.2, 9.0]]), 3.0), [[0.0, 0.2, 0.2, 3.0]])
    # only the last `window` weeks set the typical week; earlier weeks are capped too
    assert np.allclose(winsorise(np.array([[40.0, 1.0, 1.0, 1.0]]), 2.0, window=3), [[2, 1, 1, 1]])


def test_bulk_cap_winsorises_the_mean_and_tsb_components_only() -> None:
    from training.demand import DemandModel, components, tsb, winsorise

    weeks = pd.date_range("2011-01-02", periods=40, freq="7D")
    units = np.full((2, 40), 4.0)
    units[0, 34] = 400.0  # one bulk order 2 weeks before the origin
    wd = WeeklyDemand(pd.Index(["a", "b"]), weeks, units, np.ones_like(units))
    statics = ItemStatics(category=np.zeros(2, dtype=np.int64), first_week=np.zeros(2, dtype=int))
    plain = components(wd, 35, statics, np.arange(2), {}, 3)
    capped = components(wd, 35, statics, np.arange(2), {}, 3, bulk_cap=3.0)
    # mean4: (4 + 400 + 4 + 4) / 4 = 103 as sold, (4 + 12 + 4 + 4) / 4 = 6 capped at 3 x 4
    assert np.allclose(plain.point[0, 0], 103.0) and np.allclose(capped.point[0, 0], 6.0)
    assert np.allclose(capped.point[1, 0], tsb(winsorise(units[:1, :36], 3.0))[0])
    assert capped.point[1, 0, 0] < plain.point[1, 0, 0]
    assert np.allclose(capped.point[2], plain.point[2])  # med26 unchanged
    assert np.allclose(capped.quant, plain.quant)  # the quantile components see the units
    assert np.allclose(capped.point[:, 1], plain.point[:, 1])  # no bulk week: no change
    with pytest.raises(ValueError, match="bulk_cap"):
        DemandModel(bulk_cap=0.5)._check()


def test_ramp_is_the_remaining_december_ratio_along_the_season() -> None:
    from training.demand import Components

    h = 4
    phi = np.array([0.0, 0.1, 0.2, 0.3])
    comp = Components(np.zeros((1, 3, 2, h)), np.zeros((1, 2, h)), np.array([0.0, 1.0]), phi,
                      np.zeros(2, int))  # fmt: skip
    m = ramp(comp, 1.0)
    assert np.allclose(m[0], 1.0) and np.allclose(m[1], np.exp(phi))
    assert np.allclose(ramp(comp, 0.0), 1.0)


def test_point_weights_bound_the_shop_wide_bias_not_each_group() -> None:
    """A big smooth group and a small intermittent one; components (median, mean).

    The intermittent group alone is 100 % low with its median (0) but holds 1 % of the volume:
    the joint search keeps its median (best MASE) since the shop-wide bias stays near -1 %.
    """
    from training.demand import Components

    rng = np.random.default_rng(0)
    big = rng.normal(100, 5, (50, 4))
    small = np.where(rng.random((50, 4)) < 0.2, 5.0, 0.0)
    y = np.vstack([big, small])
    med = np.vstack([np.full((50, 4), 100.0), np.zeros((50, 4))])
    mean = np.vstack([np.full((50, 4), 100.0), np.full((50, 4), 1.0)])
    point = np.stack([med, mean])
    comp = Components(point[:, None].repeat(3, 1), point, np.zeros(100), np.zeros(4),
                      np.r_[np.zeros(50, int), np.ones(50, int)])  # fmt: skip
    v = Validation(comp, y, np.ones(100))
    grid = np.array([[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]])
    members = [[np.arange(50)], [np.arange(50, 100)]]
    _, (_w_big, w_small) = _point_search([v], [point], members, grid)
    assert w_small.tolist() == [1.0, 0.0]


def test_combination_weights_may_scale_the_components() -> None:
    """Every component 10 where the truth is 13: the chosen point and P50 weights sum to 1.3
    (the grids hold weights summing to POINT_SCALES / QUANT_SCALES, not only to 1)."""
    from training.demand import Components, choose_combination

    n, h = 40, 4
    quant = np.full((2, 3, n, h), 10.0)
    quant[:, 0] = 8.0
    quant[:, 2] = 12.0
    comp = Components(quant, np.full((2, n, h), 10.0), np.zeros(n), np.zeros(h), np.zeros(n, int))
    v = Validation(comp, np.full((n, h), 13.0), np.ones(n))
    comb = choose_combination([v], ["lgb_raw", "emp"], ["a", "b"], gammas=(0.0,))
    assert sum(comb.point_weights[0]) == pytest.approx(1.3)
    assert comb.scores["bias"] == pytest.approx(0.0, abs=1e-9)
    # quantile weights on their own (no point forecast to lean on): P50 weights sum to 1.3
    qw = np.concatenate([s * simplex(3, 0.1) for s in QUANT_SCALES])
    rows = [np.arange(n)]
    _, w = _quant_search([v], [np.ones((n, h))], [np.zeros((n, h))], rows, qw, 1)
    assert w[2] == 0.0 and sum(w) == pytest.approx(1.3)


def test_low_volume_groups_are_served_their_median() -> None:
    """Known answer: components 10 (quantiles 8 / 10 / 12) and a point component 20. A group
    flagged ``median_point`` is served its P50 (10), the others the point combination (20);
    the quantiles are the same either way. choose_combination flags the low-volume groups."""
    from training.demand import GROUPS, MEDIAN_POINT_LOW_VOLUME, Combination, Components, combine

    n, h = 8, 3
    quant = np.stack([np.full((n, h), 8.0), np.full((n, h), 10.0), np.full((n, h), 12.0)])[None]
    cls = np.array([0, 1, 2, 3, 4, 5, 6, 7])
    comp = Components(quant, np.full((1, n, h), 20.0), np.zeros(n), np.zeros(h), cls)
    qw = [[[1.0, 0.0]] * 3] * len(GROUPS)
    comb = Combination(0.0, ["emp"], ["a"], qw, [[1.0]] * len(GROUPS),
                       [[1.0, 1.0]] * len(GROUPS), {}, [c < 4 for c in range(len(GROUPS))])  # fmt: skip
    q, p = combine(comp, comb)
    assert (p[:4] == 10.0).all() and (p[4:] == 20.0).all()
    plain = Combination(0.0, ["emp"], ["a"], qw, [[1.0]] * len(GROUPS),
                        [[1.0, 1.0]] * len(GROUPS), {})  # fmt: skip
    q2, p2 = combine(comp, plain)
    assert (p2 == 20.0).all() and np.array_equal(q, q2)
    assert MEDIAN_POINT_LOW_VOLUME
    v = Validation(comp, np.full((n, h), 11.0), np.ones(n))
    chosen = choose_combination([v], ["emp"], ["a"], gammas=(0.0,))
    assert chosen.median_point == [True] * 4 + [False] * 4


def test_pinball_scale_finds_the_true_quantiles() -> None:
    rng = np.random.default_rng(1)
    y = rng.normal(10, 2, 20_000)
    q = np.stack([np.full_like(y, 9.0), np.full_like(y, 10.0), np.full_like(y, 11.0)])
    lo, hi = _pinball_scale(y, q)
    assert lo == pytest.approx(2.56, abs=0.1) and hi == pytest.approx(2.56, abs=0.1)


def test_interval_scale_leaves_the_target_share_in_each_tail() -> None:
    from scipy.stats import norm

    rng = np.random.default_rng(0)
    y = rng.normal(10, 2, 20_000)
    q = np.stack([np.full_like(y, 9.0), np.full_like(y, 10.0), np.full_like(y, 11.0)])
    lo, hi = _interval_scale(y, q)  # the tail quantiles of N(10, 2): 10 -/+ 2 z
    z = 2 * norm.ppf(1 - COVERAGE_TAIL)  # 2.35 at 12 %
    assert lo == pytest.approx(z, abs=0.06) and hi == pytest.approx(z, abs=0.06)


def test_bad_parameters(fitted: DemandModel, shop: tuple[pd.DataFrame, pd.DataFrame]) -> None:
    ids = list(fitted.artifact_.items[:2])
    with pytest.raises(ValueError, match="horizon"):
        fitted.forecast(ids, 0)
    with pytest.raises(ValueError, match="horizon"):
        fitted.artifact_.forecast(ids, 13)
    with pytest.raises(KeyError, match="unknown item"):
        fitted.forecast(["no-such-item"], 4)
    with pytest.raises(ValueError, match="horizon"):
        small_model(horizon=13).fit(shop[0], AS_OF, shop[1])
    with pytest.raises(ValueError, match="models"):
        small_model(models=("prophet",)).fit(shop[0], AS_OF, shop[1])
    with pytest.raises(ValueError, match="ramp_strength"):
        small_model(ramp_strength=-1.0).fit(shop[0], AS_OF, shop[1])
    with pytest.raises(ValueError, match="no purchases"):
        small_model().fit(shop[0], "2009-01-01", shop[1])
    with pytest.raises(ValueError, match="max_train_rows"):
        small_model(max_train_rows=0).fit(shop[0], AS_OF, shop[1])
    with pytest.raises(ValueError, match="max_validation_items"):
        small_model(max_validation_items=-5).fit(shop[0], AS_OF, shop[1])
    with pytest.raises(ValueError, match="season_pace"):
        small_model(season_pace="category").fit(shop[0], AS_OF, shop[1])


def _weekly(volumes: list[float], weeks: int = 30) -> WeeklyDemand:
    units = np.repeat(np.asarray(volumes, dtype=float)[:, None], weeks, axis=1)
    ids = pd.Index([f"sku-{i}" for i in range(len(volumes))])
    return WeeklyDemand(ids, pd.date_range("2024-01-07", periods=weeks, freq="7D"), units, units)


def test_sample_items_keeps_the_top_volume_and_a_stable_hash_sample() -> None:
    wd = _weekly([1, 50, 2, 40, 3, 4, 5, 6, 7, 8])
    rows = np.arange(10)
    assert sample_items(wd, 29, rows, 10) is rows  # fits: every row, same order
    got = sample_items(wd, 29, rows, 4, top_share=0.5)
    assert len(got) == 4 and {1, 3} <= set(got) and (np.diff(got) > 0).all()
    np.testing.assert_array_equal(sample_items(wd, 29, rows, 4, top_share=0.5), got)
    # the hash part depends on the ids only: dropping an item that was not picked changes nothing
    dropped = next(r for r in rows if r not in got)
    np.testing.assert_array_equal(sample_items(wd, 29, rows[rows != dropped], 4, 0.5), got)
    plain = sample_items(wd, 29, rows, 4, top_share=0.0)
    ids = wd.items.to_numpy(dtype=object)
    expected = np.sort(np.argsort(pd.util.hash_array(ids), kind="stable")[:4])
    np.testing.assert_array_equal(plain, expected)


def test_training_row_cap(shop: tuple[pd.DataFrame, pd.DataFrame], fitted: DemandModel) -> None:
    orders, items = shop
    loose = small_model(max_train_rows=10**6, max_validation_items=10**6).fit(orders, AS_OF, items)
    np.testing.assert_array_equal(loose.artifact_.quantiles, fitted.artifact_.quantiles)
    capped = small_model(max_train_rows=800, max_validation_items=10).fit(orders, AS_OF, items)
    q = capped.artifact_.quantiles
    assert list(capped.artifact_.items) == list(fitted.artifact_.items)  # every item forecast
    assert (q >= 0).all() and (q[0] <= q[1]).all() and (q[1] <= q[2]).all()
    assert not np.array_equal(q, fitted.artifact_.quantiles)  # the cap did bind
    assert capped.artifact_.meta["params"]["max_train_rows"] == 800


# ------------------------------------------------------------- mid-week as_of, closure weeks
def _weekday_orders() -> pd.DataFrame:
    """10 units every Monday to Friday (a shop closed at weekends), 8 weeks from 2011-08-01."""
    days = [d for d in pd.date_range("2011-08-01", "2011-09-30") if d.day_of_week < 5]
    return pd.DataFrame(
        {
            ORDERED_AT: [d + pd.Timedelta(hours=9) for d in days],
            QUANTITY: 10.0,
            IS_RETURN: False,
        }
    )


@pytest.mark.parametrize(
    ("as_of", "share", "span"),
    [
        ("2011-09-10", 0.0, 2 / 7),  # Saturday: only the closed weekend is left
        ("2011-09-07", 3 / 5, 5 / 7),  # Wednesday 00:00: Wednesday to Friday of 5 selling days
        ("2011-09-07 12:00", 2.5 / 5, 4.5 / 7),  # half of Wednesday is gone
        ("2011-09-12", 1.0, 1.0),  # Monday 00:00: the whole week is ahead
    ],
)
def test_week_ahead_share_follows_the_weekday_profile(
    as_of: str, share: float, span: float
) -> None:
    got = week_ahead(_weekday_orders(), as_of)
    assert got == pytest.approx((share, span))


AS_OF_SATURDAY = pd.Timestamp("2011-09-10")  # same last complete week as AS_OF (2011-09-04)


@pytest.fixture(scope="module")
def fitted_saturday(shop: tuple[pd.DataFrame, pd.DataFrame]) -> DemandModel:
    orders, items = shop
    return small_model().fit(orders, AS_OF_SATURDAY, items)


def test_mid_week_as_of_forecasts_the_rest_of_the_current_week(
    fitted: DemandModel, fitted_saturday: DemandModel
) -> None:
    """Known answer: at a Saturday as_of the weekly series are those of the Monday before
    (complete weeks only), so every week is the Monday fit's except week 1, the current week,
    which holds only the demand still ahead: the uniform daily shop sells 2/7 of a week's units
    on Saturday and Sunday."""
    a, b = fitted.artifact_, fitted_saturday.artifact_
    assert a.meta["first_week_share"] == 1.0 and a.meta["first_week_span"] == 1.0
    share = b.meta["first_week_share"]
    assert share == pytest.approx(2 / 7, abs=0.03)
    assert b.first_week_span == pytest.approx(2 / 7)
    assert (b.weeks == a.weeks).all()
    np.testing.assert_allclose(b.quantiles[:, :, 0], share * a.quantiles[:, :, 0])
    np.testing.assert_allclose(b.point[:, 0], share * a.point[:, 0])
    np.testing.assert_allclose(b.quantiles[:, :, 1:], a.quantiles[:, :, 1:])
    table = b.forecast(list(b.items[:2]), 3)
    assert table["share_ahead"].tolist() == pytest.approx([share, 1.0, 1.0] * 2)
    assert a.forecast(list(a.items[:2]), 3)["share_ahead"].tolist() == [1.0] * 6


def test_units_already_sold_this_week_leave_the_rest_of_it_unchanged(
    shop: tuple[pd.DataFrame, pd.DataFrame], fitted_saturday: DemandModel
) -> None:
    """Week 1 of a mid-week as_of is the demand still ahead: the units sold between Monday and
    as_of are neither subtracted from it (they were sold, not still to come: the stock on hand
    at as_of already lacks them) nor used to update it (on Online Retail, replaying Tuesday to
    Friday as_ofs of spring weeks, updating the rest of the week with the days already sold
    raised the WAPE of the remaining units; see point 6 of training.demand). An item that sold
    500 units on Wednesday keeps the same forecast for Saturday and Sunday."""
    orders, items = shop
    item = str(fitted_saturday.artifact_.items[0])
    big = orders.iloc[[0]].copy()
    big[ITEM_ID] = item
    big[ORDERED_AT] = pd.Timestamp("2011-09-07 10:00")
    big[QUANTITY] = 500.0
    big[ORDER_ID] = "o-wednesday"
    busy = small_model().fit(pd.concat([orders, big], ignore_index=True), AS_OF_SATURDAY, items)
    a, b = fitted_saturday.artifact_, busy.artifact_
    assert b.meta["first_week_share"] == a.meta["first_week_share"]
    i = list(b.items).index(item)
    np.testing.assert_array_equal(b.quantiles[:, i], a.quantiles[:, i])
    np.testing.assert_array_equal(b.point[i], a.point[i])


def test_fit_logs_its_stages(
    shop: tuple[pd.DataFrame, pd.DataFrame], caplog: pytest.LogCaptureFixture
) -> None:
    orders, items = shop
    with caplog.at_level("INFO", logger="training.demand"):
        small_model(horizon=4).fit(orders, AS_OF_SATURDAY, items)
    text = [r.getMessage() for r in caplog.records if r.name == "training.demand"]
    # each validation origin's own line is DEBUG (shopml -v); the stages above it are INFO
    assert not any("validation origin 2011-07-10" in t for t in text)
    for stage in (
        "weekly series built: 24 items x 39 weeks (2010-12-12 to 2011-09-04)",
        "validation origins 2011-05-15, 2011-06-12, 2011-07-10",
        "validation boosters fitted at 2011-05-15",
        "combination chosen",
        "final fit at 2011-09-04",
        "week 1 share ahead of as_of",
    ):
        assert sum(stage in t for t in text) == 1, (stage, text)
    assert all(len(t) < 200 for t in text)  # one concise line each, no object dumps


def _shop_weeks(closure: dict[str, float]) -> tuple[np.ndarray, pd.DatetimeIndex]:
    """Two items, weekly units with log-normal noise (sd 0.15), Sundays 2010-11-07..2011-12-04;
    ``closure`` sets last year's shop-wide units of some weeks (split evenly)."""
    weeks = pd.date_range("2010-11-07", "2011-12-04", freq="7D")
    rng = np.random.default_rng(3)
    units = 50.0 * np.exp(0.15 * rng.standard_normal((2, len(weeks))))
    for day, total in closure.items():
        units[:, int(weeks.searchsorted(pd.Timestamp(day)))] = total / 2
    return units, weeks


def test_closure_weeks_carry_over_from_last_year() -> None:
    """Known answer: a week far below its surroundings last year (the shop closed around
    Christmas) multiplies the same calendar week this year by its ratio to the median of the two
    weeks before and after it; an ordinary dip (0.8x) and a history without closure get 1."""
    units, weeks = _shop_weeks({"2010-12-26": 30.0, "2011-01-02": 0.0, "2011-03-06": 80.0})
    t = len(weeks) - 1  # 2011-12-04: weeks ahead end 12-11, 12-18, 12-25, 01-01, 01-08, 01-15
    total = units.sum(axis=0)
    j = int(weeks.searchsorted(pd.Timestamp("2010-12-26")))
    expected = 30.0 / min(total[j - 2 : j].max(), total[j + 1 : j + 3].max())
    got = closure_factors(units, weeks, t, 6)
    assert got == pytest.approx([1.0, 1.0, expected, 0.0, 1.0, 1.0])
    assert 0.3 < expected < 0.4
    plain, _ = _shop_weeks({"2011-03-06": 80.0})
    assert closure_factors(plain, weeks, t, 12).tolist() == [1.0] * 12
    # no last year's week in the history (a benchmark-like origin): nothing changes
    assert (
        closure_factors(
            units, weeks, int(weeks.searchsorted(pd.Timestamp("2011-08-28"))), 12
        ).tolist()
        == [1.0] * 12
    )


def test_fit_carries_the_christmas_closure_into_the_served_table() -> None:
    """A shop that closed from 23 December to 2 January last year forecasts 0 for the week
    ending 1 January; the week ending 25 December, open 3 days at the season's peak last year,
    is no dip below the weeks after the season, so it keeps its forecast. The same shop without
    the closure forecasts ordinary weeks (factor 1), though its season ends abruptly."""
    orders, items = synthetic_shop(n_items=12, end="2011-12-11")
    when = orders[ORDERED_AT]
    closed = orders[(when < "2010-12-23") | (when >= "2011-01-03")]  # reopens Monday 3 January
    as_of = "2011-12-12"  # Monday: weeks ahead end 12-18, 12-25, 01-01, 01-08
    art = small_model(horizon=4).fit(closed, as_of, items).artifact_
    f = art.meta["closure_factors"]
    total = weekly_demand(closed, as_of).frame().sum(axis=0)
    j = int(total.index.searchsorted(pd.Timestamp("2010-12-26")))  # open 20-22 December only
    expected = total.iloc[j] / min(total.iloc[j - 2 : j].max(), total.iloc[j + 1 : j + 3].max())
    assert expected > 1.0  # 3 days at the season's peak: above the level after the season
    assert f == [1.0, 1.0, 0.0, 1.0]
    assert art.point[:, 2].max() == 0.0 and art.quantiles[:, :, 2].max() == 0.0
    assert art.point[:, 1].sum() > 0
    open_shop = small_model(horizon=4).fit(orders, as_of, items).artifact_
    assert open_shop.meta["closure_factors"] == [1.0] * 4
    assert open_shop.point[:, 2].sum() > 0


# ---------------------------------------------------------------------------- planner maths
def test_plan_counts_the_lead_time_from_a_mid_week_as_of() -> None:
    """Known answer: 7 units a week, 1 a day, as_of on a Saturday: the table's first week holds
    the 2 units of Saturday and Sunday over 2/7 of a week, so every span from as_of holds 7
    units a week (lead time 1: 2 + 5; lead + review 2: 2 + 7 + 5) and stock covers stock / 7."""
    q = np.full((3, 12), 7.0)
    q[:, 0] = 2.0
    stock = np.array([5.0, 12.0, 200.0])
    out = plan(q, q, q, lead_time=1, review_period=1, on_hand=stock, first_week_span=2 / 7)
    assert out["expected_lead_time_demand"] == pytest.approx([7.0] * 3)
    assert out["reorder_point"] == pytest.approx([7.0] * 3)
    assert out["order_up_to"] == pytest.approx([14.0] * 3)
    assert out["weeks_of_cover"] == pytest.approx(stock / 7)
    # the table spans 11 2/7 weeks: 200 units (28.6 weeks) are overstock, 150 (21.4) are not
    assert out["overstock"].tolist() == [False, False, True]
    calm = plan(q, q, q, lead_time=1, on_hand=150.0, first_week_span=2 / 7)
    assert not calm["overstock"][0]
    with pytest.raises(ValueError, match="first_week_span"):
        plan(q, q, q, lead_time=1, first_week_span=0.0)


def test_reorder_point_constant_demand() -> None:
    """Known answer: 10 units every week with no uncertainty."""
    q = np.full((1, 12), 10.0)
    out = plan(q, q, q, lead_time=2, review_period=1, service_level=0.95, on_hand=25, price=3.0)
    assert out["reorder_point"][0] == pytest.approx(20.0)
    assert out["order_up_to"][0] == pytest.approx(30.0)
    assert out["safety_stock"][0] == pytest.approx(0.0)
    assert out["weeks_of_cover"][0] == pytest.approx(2.5)
    assert out["p_stockout"][0] == 0.0 and not out["stockout_risk"][0]
    assert out["order_quantity"][0] == 0.0  # position 25 > reorder point 20
    low = plan(q, q, q, lead_time=2, review_period=1, on_hand=15, price=3.0)
    assert low["p_stockout"][0] == 1.0 and low["stockout_risk"][0]
    assert low["order_quantity"][0] == pytest.approx(15.0)
    assert low["revenue_at_risk"][0] == pytest.approx(5 * 3.0)


def test_reorder_point_exponential_lead_time_demand() -> None:
    """Known answer: weekly mean 10 and sd 10 -> Gamma shape 1 (exponential) over one week.

    P10 = 0, P90 = 2 * 1.28155 * 10, P50 chosen so the Pearson-Tukey mean is 10.
    Reorder point at 95 % = -10 ln(0.05) = 29.957; safety stock (review 0) = 19.957;
    P(stock-out) with 10 units = exp(-1).
    """
    p90 = 2 * 1.2815515655446004 * 10
    p50 = (10 - 0.3 * p90) / 0.4
    a10, a50, a90 = (np.full((1, 12), v) for v in (0.0, p50, p90))
    out = plan(a10, a50, a90, lead_time=1, review_period=0, service_level=0.95, on_hand=10)
    assert out["reorder_point"][0] == pytest.approx(10 * math.log(20), rel=1e-6)
    assert out["safety_stock"][0] == pytest.approx(10 * math.log(20) - 10, rel=1e-6)
    assert out["p_stockout"][0] == pytest.approx(math.exp(-1), rel=1e-6)
    assert out["stockout_risk"][0]  # 0.37 > 1 - 0.95


def test_overstock_flag() -> None:
    q = np.full((2, 12), 1.0)
    out = plan(q, q, q, lead_time=1, on_hand=np.array([5.0, 100.0]), price=2.0)
    assert out["overstock"].tolist() == [False, True]
    assert out["weeks_of_cover"][1] == pytest.approx(100.0)
    assert out["overstock_value"][1] == pytest.approx((100 - 12) * 2.0)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"service_level": 1.0}, "service_level"),
        ({"service_level": 0.0}, "service_level"),
        ({"lead_time": -1}, "lead_time"),
        ({"review_period": -0.5}, "review_period"),
        ({"on_hand": -3}, "on_hand"),
    ],
)
def test_plan_bad_parameters(kw: dict[str, float], match: str) -> None:
    q = np.ones((1, 4))
    args: dict[str, float] = {"lead_time": 1.0, **kw}
    with pytest.raises(ValueError, match=match):
        plan(q, q, q, **args)  # type: ignore[arg-type]


def test_plan_huge_finite_stock_is_exact_without_warnings() -> None:
    """Stock up to 1e308 units: nothing short, no overflow warning (scipy's ``x / scale``
    overflowed); what exceeds float64 (1e308 + 1e308, 1e308 x price) is inf."""
    p90 = 2 * 1.2815515655446004 * 10  # exponential weekly demand, mean 10 (as above)
    a10, a50, a90 = (np.full((3, 12), v) for v in (0.0, (10 - 0.3 * p90) / 0.4, p90))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = plan(
            a10,
            a50,
            a90,
            lead_time=1,
            on_hand=np.array([1e12, 1e308, 1e308]),
            on_order=np.array([0.0, 0.0, 1e308]),
            price=3.0,
        )
    assert out["p_stockout"].tolist() == [0.0, 0.0, 0.0]
    assert out["revenue_at_risk"].tolist() == [0.0, 0.0, 0.0]
    assert out["order_quantity"].tolist() == [0.0, 0.0, 0.0]
    cover = out["weeks_of_cover"]
    assert cover[0] == pytest.approx(12 + (1e12 - 120) / 10) and cover[1] == pytest.approx(1e307)
    assert cover[2] == math.inf
    assert out["overstock_value"][0] == pytest.approx((1e12 - 120) * 3.0)
    assert out["overstock_value"][1:].tolist() == [math.inf, math.inf]


# -------------------------------------------------------------------------------- real data
@pytest.mark.realdata
def test_protocol_d_series_counts(online_retail) -> None:  # type: ignore[no-untyped-def]
    from features.demand import active_items
    from features.schema import purchases
    from training.benchmarks.demand import ORIGINS, origin_as_of

    orders = purchases(online_retail.orders)
    counts = {
        o: int(active_items(weekly_demand(orders, origin_as_of(o)).units).sum()) for o in ORIGINS
    }
    assert counts == {"2011-08-28": 2119, "2011-07-31": 1938, "2011-10-02": 2287}


@pytest.mark.realdata
def test_training_cap_does_not_bind_on_online_retail(online_retail) -> None:  # type: ignore[no-untyped-def]
    from features.demand import active_items
    from features.pipeline import default_as_of
    from training.demand import MAX_TRAIN_ROWS

    orders = online_retail.orders
    series = int(active_items(weekly_demand(orders, default_as_of(orders)).units).sum())
    # 16 training origins t-1, t-3, ..., t-31: h = 1, 3, ..., 11, then 12 ten times
    rows_per_item = sum(range(1, 12, 2)) + 10 * 12
    assert series == 2617 and series * rows_per_item <= MAX_TRAIN_ROWS


def test_batch_and_serving_agree_at_a_mid_week_as_of(fitted_saturday: DemandModel) -> None:
    """forecasts.parquet and the API give the same week-1 numbers (the rest of the week) and
    the same reorder advice, with the lead time counted from the Saturday as_of."""
    from serving.runtime import DemandView
    from training.score import forecast_table, inventory_table

    art = fitted_saturday.artifact_
    item = str(art.items[0])
    batch = forecast_table(art)
    week1 = batch[(batch["item_id"] == item) & (batch["weeks_ahead"] == 1)].iloc[0]
    api = DemandView(art, "1").forecast([item], 12, 1.0, 0.95, {item: 3.0})["items"][0]
    assert api["weeks"][0]["p50"] == pytest.approx(week1["p50"])
    assert api["weeks"][0]["share_ahead"] == pytest.approx(art.first_week_share)
    stock = pd.Series({item: 3.0})
    inv = inventory_table(art, lead_time_weeks=1.0, service_level=0.95, stock_on_hand=stock)
    row = inv[inv["item_id"] == item].iloc[0]
    assert row["reorder_point"] == pytest.approx(api["reorder_point"])
    assert row["stockout_probability"] == pytest.approx(api["stockout_probability"])
    f = art.forecast_arrays([item], 12)
    expected = plan(f["p10"], f["p50"], f["p90"], lead_time=1.0, first_week_span=2 / 7)
    assert row["reorder_point"] == pytest.approx(expected["reorder_point"][0])
    whole = plan(f["p10"], f["p50"], f["p90"], lead_time=1.0)
    assert expected["expected_lead_time_demand"][0] > whole["expected_lead_time_demand"][0]


def test_weekly_validation_origins_end_before_the_first_test_origin() -> None:
    from training.benchmarks.demand import ORIGINS, WEEKLY_VALIDATION_ORIGINS

    first_test = min(pd.Timestamp(o) for o in ORIGINS)
    origins = pd.DatetimeIndex(list(WEEKLY_VALIDATION_ORIGINS))
    assert len(origins) == 9 and (origins[1:] - origins[:-1] == pd.Timedelta(days=7)).all()
    for origin, h in WEEKLY_VALIDATION_ORIGINS.items():
        end = pd.Timestamp(origin) + pd.Timedelta(days=7 * h)
        assert end <= first_test and (h == 12 or end == first_test)
