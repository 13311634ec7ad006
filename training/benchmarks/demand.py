"""Protocol D of ``../shared/BENCHMARKS.md``: weekly demand forecasts on Online Retail.

Weekly units per StockCode (cleaned purchases), weeks ending Sunday, first full week ending
2010-12-12, missing weeks 0. Series: items with sales in >= 10 training weeks. Origins (the week
that ends the training data): 2011-08-28 (h = 12), 2011-07-31 (h = 12), 2011-10-02 (h = 8).

Run with ``python -m training.benchmarks.demand`` (test origins, ``online-retail-D.json``) or
``python -m training.benchmarks.demand --validation``: the same rows at validation origins whose
windows end by 2011-07-31, before every test window (``online-retail-D-validation.json``). Model
choices are made there (and on the synthetic shop), never on the test windows.
``--season-check`` fits a synthetic gift-season shop whose December sellers rise at different
times (:func:`season_shop`) with the shop-wide and the per-item season pace
(``online-retail-D-season-synthetic.json``): no Online Retail window before the test holds the
autumn.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features.demand import WeeklyDemand, active_items, calendar_features, weekly_demand
from features.schema import (
    CATEGORY,
    CUSTOMER_ID,
    IS_RETURN,
    ITEM_ID,
    ITEM_NAME,
    ORDER_ID,
    ORDERED_AT,
    QUANTITY,
    UNIT_PRICE,
    purchases,
)
from training.benchmarks import next_test_look, write_results

log = logging.getLogger(__name__)

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "online_retail"
ORIGINS: dict[str, int] = {"2011-08-28": 12, "2011-07-31": 12, "2011-10-02": 8}
MAIN_ORIGIN = "2011-08-28"
#: validation origins: every window ends by 2011-07-31, the first test origin (h so that it does)
VALIDATION_ORIGINS: dict[str, int] = {"2011-05-08": 12, "2011-05-22": 10, "2011-06-05": 8}
#: ``--validation --weekly``: every week from 2011-05-08 to 2011-07-03, h up to 12 so that each
#: window ends by 2011-07-31 (nine origins: a change's effect on the bias is within the noise of
#: three, whose fits see one or two inner validation origins each)
WEEKLY_VALIDATION_ORIGINS: dict[str, int] = {
    str(o.date()): min(12, (pd.Timestamp("2011-07-31") - o).days // 7)
    for o in pd.date_range("2011-05-08", "2011-07-03", freq="7D")
}
QUANTILES = (0.1, 0.5, 0.9)
MIN_WEEKS = 10
NUM_THREADS = 2

#: statsforecast rows quoted from BENCHMARKS.md (statsforecast needs pandas < 3; not recomputed).
QUOTED: dict[str, dict[str, dict[str, float]]] = {
    "D@2011-08-28": {
        "statsforecast-autoets": {
            "mase": 1.591, "rmsse": 1.312, "wape": 0.799, "bias": -0.109,
            "pinball@0.1": 6.00, "pinball@0.5": 19.67, "pinball@0.9": 16.94,
            "coverage80": 0.84, "fit_s": 4.0,
        },
        "statsforecast-adida": {
            "mase": 1.544, "rmsse": 1.288, "wape": 0.751, "bias": -0.198, "fit_s": 0.3,
        },
        "statsforecast-tsb-0.1-0.1": {
            "mase": 1.565, "rmsse": 1.298, "wape": 0.851, "bias": -0.106, "fit_s": 0.3,
        },
    },
    "D-mean": {
        "statsforecast-adida": {"mase": 1.432, "wape": 0.740},
        "statsforecast-autoets": {"mase": 1.465, "wape": 0.784},
    },
}  # fmt: skip


# --------------------------------------------------------------------------------- the protocol
def origin_as_of(origin: str | pd.Timestamp) -> pd.Timestamp:
    """``as_of`` for an origin week: the day after its Sunday (the origin week is training)."""
    return pd.Timestamp(origin) + pd.Timedelta(days=1)


def actuals(orders: pd.DataFrame, items: pd.Index, origin: str, horizon: int) -> np.ndarray:
    """Units of ``items`` in the ``horizon`` weeks after ``origin`` (0 where nothing was sold)."""
    start = pd.Timestamp(origin) + pd.Timedelta(days=7)
    end = pd.Timestamp(origin) + pd.Timedelta(days=7 * horizon)
    wd = weekly_demand(orders, end + pd.Timedelta(days=1), start=start, end=end)
    frame = wd.frame().reindex(items).fillna(0.0)
    return frame.to_numpy()


# ------------------------------------------------------------------------------------- metrics
def point_metrics(history: np.ndarray, y: np.ndarray, f: np.ndarray) -> dict[str, float]:
    """MASE, RMSSE (naive in-sample scales; series with scale 0 skipped), WAPE and bias."""
    diff = np.diff(history, axis=1)
    mae_scale = np.abs(diff).mean(axis=1)
    mse_scale = (diff**2).mean(axis=1)
    err = f - y
    ok = mae_scale > 0
    mase = float(np.mean(np.abs(err[ok]).mean(axis=1) / mae_scale[ok]))
    rmsse = float(np.mean(np.sqrt((err[ok] ** 2).mean(axis=1) / mse_scale[ok])))
    total = float(y.sum())
    return {
        "mase": mase,
        "rmsse": rmsse,
        "wape": float(np.abs(err).sum() / total),
        "bias": float(err.sum() / total),
    }


def pinball(y: np.ndarray, f: np.ndarray, q: float) -> float:
    """Mean pinball loss of quantile ``q`` over all series and weeks (in units)."""
    d = y - f
    return float(np.mean(np.maximum(q * d, (q - 1) * d)))


def quantile_metrics(y: np.ndarray, quantiles: np.ndarray) -> dict[str, float]:
    """Pinball loss at 0.1/0.5/0.9 and the coverage of [P10, P90]; ``quantiles`` is (3, n, h)."""
    out = {f"pinball@{q}": pinball(y, quantiles[k], q) for k, q in enumerate(QUANTILES)}
    out["coverage80"] = float(np.mean((y >= quantiles[0]) & (y <= quantiles[2])))
    return out


# ----------------------------------------------------------------------------------- references
def ref_naive(hist: np.ndarray, h: int) -> np.ndarray:
    return np.repeat(hist[:, -1:], h, axis=1)


def ref_mean(hist: np.ndarray, h: int, window: int) -> np.ndarray:
    return np.repeat(hist[:, -window:].mean(axis=1, keepdims=True), h, axis=1)


def ref_empirical(hist: np.ndarray, h: int, window: int = 12) -> np.ndarray:
    """Empirical P10/P50/P90 of the last ``window`` weeks, shape (3, n, h)."""
    q = np.quantile(hist[:, -window:], QUANTILES, axis=1)
    return np.repeat(q[:, :, None], h, axis=2)


def lgb_reference_frame(
    wd: WeeklyDemand, rows: np.ndarray, t: int, horizon: int
) -> tuple[pd.DataFrame, np.ndarray]:
    """Direct features at origin index ``t`` (lags 1-4, 8, 12, rolling 4/12, week, price, h)."""
    u = wd.units[rows]
    base = {
        **{f"lag{k}": u[:, t - k + 1] for k in (1, 2, 3, 4, 8, 12)},
        "roll4": u[:, t - 3 : t + 1].mean(axis=1),
        "roll12": u[:, t - 11 : t + 1].mean(axis=1),
        "price": wd.price[rows, t],
    }
    weeks = wd.weeks[t] + pd.to_timedelta(7 * np.arange(1, horizon + 1), unit="D")
    woy = calendar_features(pd.DatetimeIndex(weeks))["week_of_year"].to_numpy()
    parts = []
    for k in range(horizon):
        part = pd.DataFrame(base)
        part["h"] = k + 1
        part["week_of_year"] = woy[k]
        parts.append(part)
    frame = pd.concat(parts, ignore_index=True)
    target_t = t + np.arange(1, horizon + 1)
    return frame, target_t


def ref_lightgbm(
    wd: WeeklyDemand, rows: np.ndarray, horizon: int, objectives: list[dict[str, Any]]
) -> list[np.ndarray]:
    """Global direct LightGBM references (one model over h = 1..horizon); (n, h) per objective."""
    import lightgbm as lgb

    last = len(wd.weeks) - 1
    xs, ys = [], []
    for t in range(11, last):
        frame, target_t = lgb_reference_frame(wd, rows, t, horizon)
        ok = np.repeat(target_t <= last, len(rows))
        y = wd.units[rows][:, np.minimum(target_t, last)].T.reshape(-1)
        xs.append(frame[ok])
        ys.append(y[ok])
    x, y = pd.concat(xs, ignore_index=True), np.concatenate(ys)
    xt, _ = lgb_reference_frame(wd, rows, last, horizon)
    out = []
    for params in objectives:
        full = {"num_threads": NUM_THREADS, "verbose": -1, "seed": 0, **params}
        booster = lgb.train(full, lgb.Dataset(x, y), num_boost_round=200)
        pred = np.asarray(booster.predict(xt)).reshape(horizon, len(rows)).T
        out.append(np.maximum(pred, 0.0))
    return out


# ------------------------------------------------------------------------------------- runner
def _row(task: str, model: str, **metrics: Any) -> dict[str, Any]:
    return {"task": task, "model": model, **{k: v for k, v in metrics.items() if v is not None}}


def evaluate_origin(
    orders: pd.DataFrame,
    items: pd.DataFrame | None,
    origin: str,
    horizon: int,
    model_kw: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Every row (shopml and references) for one origin; ``model_kw`` go to the DemandModel."""
    from training.demand import DemandModel, tsb

    task = f"D@{origin}"
    purch = purchases(orders)
    wd = weekly_demand(purch, origin_as_of(origin))
    rows = np.flatnonzero(active_items(wd.units, MIN_WEEKS))
    hist = wd.units[rows]
    y = actuals(purch, wd.items[rows], origin, horizon)
    log.info("%s: %d series, h = %d", task, len(rows), horizon)
    out: list[dict[str, Any]] = []

    started = time.perf_counter()
    model = DemandModel(horizon=horizon, num_threads=NUM_THREADS, **(model_kw or {})).fit(
        orders, origin_as_of(origin), items
    )
    fit_s = time.perf_counter() - started
    started = time.perf_counter()
    fc = model.artifact_.forecast_arrays(wd.items[rows], horizon)
    predict_s = time.perf_counter() - started
    quant = np.stack([fc["p10"], fc["p50"], fc["p90"]])
    p50 = point_metrics(hist, y, fc["p50"])
    out.append(
        _row(
            task, "shopml", series=len(rows), **point_metrics(hist, y, fc["point"]),
            **quantile_metrics(y, quant),
            mase_p50=p50["mase"], wape_p50=p50["wape"], bias_p50=p50["bias"],
            fit_s=fit_s, predict_s=predict_s,
            combination={k: getattr(model.combination_, k) for k in
                         ("gamma", "point_weights", "interval_scale", "median_point")},
            validation=model.combination_.scores,
        )
    )  # fmt: skip

    def simple(name: str, fn: Callable[[], np.ndarray]) -> None:
        t0 = time.perf_counter()
        f = fn()
        out.append(_row(task, name, **point_metrics(hist, y, f), fit_s=time.perf_counter() - t0))

    simple("naive", lambda: ref_naive(hist, horizon))
    simple("mean-12", lambda: ref_mean(hist, horizon, 12))
    simple("mean-4", lambda: ref_mean(hist, horizon, 4))
    simple("tsb-0.1-0.1 (numpy)", lambda: np.repeat(tsb(hist)[:, None], horizon, axis=1))
    t0 = time.perf_counter()
    emp = ref_empirical(hist, horizon)
    out.append(
        _row(task, "empirical-quantiles-12", **point_metrics(hist, y, emp[1]),
             **quantile_metrics(y, emp), fit_s=time.perf_counter() - t0)
    )  # fmt: skip
    t0 = time.perf_counter()
    (tw,) = ref_lightgbm(wd, rows, horizon, [{"objective": "tweedie"}])
    out.append(
        _row(task, "lightgbm-tweedie-global", **point_metrics(hist, y, tw),
             fit_s=time.perf_counter() - t0)
    )  # fmt: skip
    t0 = time.perf_counter()
    qs = ref_lightgbm(wd, rows, horizon, [{"objective": "quantile", "alpha": a} for a in QUANTILES])
    q = np.sort(np.stack(qs), axis=0)
    out.append(
        _row(task, "lightgbm-quantile", **point_metrics(hist, y, q[1]), **quantile_metrics(y, q),
             fit_s=time.perf_counter() - t0)
    )  # fmt: skip
    for name, metrics in QUOTED.get(task, {}).items():
        out.append(_row(task, name, **metrics, source="BENCHMARKS.md"))
    return out


def mean_rows(
    rows: list[dict[str, Any]], origins: dict[str, int] = ORIGINS, quoted: bool = True
) -> list[dict[str, Any]]:
    """``D-mean``: per model, the mean of each metric over the origins."""
    out = []
    models = dict.fromkeys(r["model"] for r in rows if r["task"] != "D-mean")
    keys = ("mase", "rmsse", "wape", "bias", "pinball@0.1", "pinball@0.5", "pinball@0.9",
            "coverage80", "mase_p50", "wape_p50", "bias_p50", "fit_s")  # fmt: skip
    for model in models:
        mine = [r for r in rows if r["model"] == model and "source" not in r]
        if len(mine) != len(origins):
            continue
        metrics = {k: float(np.mean([r[k] for r in mine])) for k in keys if k in mine[0]}
        out.append(_row("D-mean", model, **metrics))
    for name, metrics in QUOTED["D-mean"].items() if quoted else ():
        out.append(_row("D-mean", name, **metrics, source="BENCHMARKS.md"))
    return out


def run(dataset: Any, note: str | None = None) -> list[dict[str, Any]]:
    """Protocol D on a loaded Online Retail :class:`~features.io.Dataset`; writes the results."""
    rows: list[dict[str, Any]] = []
    for origin, horizon in ORIGINS.items():
        rows += evaluate_origin(dataset.orders, dataset.items, origin, horizon)
    rows += mean_rows(rows)
    look = next_test_look("online-retail", "D", note)
    write_results("online-retail", "D", rows, as_of=MAIN_ORIGIN, **look)
    return rows


def validate(
    dataset: Any, bulk_cap: float | None = None, weekly: bool = False
) -> list[dict[str, Any]]:
    """Every row at :data:`VALIDATION_ORIGINS` (``weekly``: :data:`WEEKLY_VALIDATION_ORIGINS`;
    no test window); writes ``online-retail-D-validation[-weekly][-bulk-cap<cap>]``
    (``bulk_cap``: the model's option)."""
    origins = WEEKLY_VALIDATION_ORIGINS if weekly else VALIDATION_ORIGINS
    rows: list[dict[str, Any]] = []
    kw = {} if bulk_cap is None else {"bulk_cap": bulk_cap}
    for origin, horizon in origins.items():
        rows += evaluate_origin(dataset.orders, dataset.items, origin, horizon, kw)
    rows += mean_rows(rows, origins, quoted=False)
    note = "validation origins only: windows end by 2011-07-31, before every test window"
    stem = "online-retail-D-validation" + ("-weekly" if weekly else "")
    write_results(
        "online-retail",
        "D",
        rows,
        as_of=max(origins),
        stem=stem + ("" if bulk_cap is None else f"-bulk-cap{bulk_cap:g}"),
        note=note + ("" if bulk_cap is None else f"; DemandModel(bulk_cap={bulk_cap:g})"),
    )
    return rows


#: origins of the season check (h): the autumn, when the season pace matters
SEASON_ORIGINS: dict[str, int] = {"2011-09-11": 12, "2011-10-02": 8, "2011-10-16": 8}


def _season_multiplier(days: pd.DatetimeIndex, onset: int, full: int, peak: float) -> np.ndarray:
    """``peak ** ramp``: log-linear from day of year ``onset`` to ``full``, ``peak`` from then to
    24 December, 1 from 25 December."""
    doy = days.day_of_year.to_numpy()
    ramp = np.clip((doy - onset) / (full - onset), 0.0, 1.0)
    in_dec = np.asarray((days.month == 12) & (days.day <= 24))
    return np.asarray(np.where(in_dec, peak, np.where(days.month == 12, 1.0, peak**ramp)))


def season_shop(
    seed: int, n_items: int = 240, end: str = "2011-12-20"
) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
    """A seeded one-year shop (daily Poisson units from 2010-12-01) with a known gift season:
    a sixth of the items are early December sellers with 3x the volume, rising log-linearly from
    1 June to their full 4x December level by 15 October (as Online Retail's December sellers
    rose from the summer, season index 0.89 at 2011-10-02); a sixth are late ones, rising from
    1 October to 4x by 15 December (the calendar prior's shape); the rest are flat. All
    December sellers share one category. Returns (orders, items, kind: 0 early, 1 late, 2 flat).
    """
    rng = np.random.default_rng(seed)
    days = pd.date_range("2010-12-01", end, freq="D")
    kind = np.minimum(np.arange(n_items) % 6, 2)
    base = np.exp(rng.uniform(np.log(0.3), np.log(10), n_items)) * np.where(kind == 0, 3.0, 1.0)
    rates = np.ones((n_items, len(days))) * base[:, None]
    rates[kind == 0] *= _season_multiplier(days, 152, 288, 4.0)[None]
    rates[kind == 1] *= _season_multiplier(days, 274, 349, 4.0)[None]
    k = rng.poisson(rates)
    ii, dd = np.nonzero(k)
    ids = np.array([str(10000 + i) for i in range(n_items)])
    orders = pd.DataFrame(
        {
            CUSTOMER_ID: [f"c{x}" for x in rng.integers(500, size=len(ii))],
            ORDER_ID: [f"o{j}" for j in range(len(ii))],
            ITEM_ID: ids[ii],
            ORDERED_AT: days[dd] + pd.Timedelta(hours=10),
            QUANTITY: k[ii, dd].astype(float),
            UNIT_PRICE: 1.0 + ii % 3,
            IS_RETURN: False,
        }
    )
    items = pd.DataFrame(
        {
            ITEM_ID: ids,
            ITEM_NAME: [f"item {i}" for i in range(n_items)],
            CATEGORY: np.where(kind < 2, "XMAS", "PLAIN"),
        }
    )
    return orders, items, kind


def season_check(seeds: tuple[int, ...] = (0, 1), write: bool = True) -> list[dict[str, Any]]:
    """Protocol D's metrics on :func:`season_shop` at :data:`SEASON_ORIGINS`, with the
    shop-wide and the per-item season pace, and MASE per kind of December seller."""
    from training.demand import DemandModel

    rows: list[dict[str, Any]] = []
    for seed in seeds:
        orders, items, kind = season_shop(seed)
        for pace in ("shop", "item"):
            per: list[dict[str, Any]] = []
            for origin, horizon in SEASON_ORIGINS.items():
                wd = weekly_demand(orders, origin_as_of(origin))
                sel = np.flatnonzero(active_items(wd.units, MIN_WEEKS))
                hist, y = wd.units[sel], actuals(orders, wd.items[sel], origin, horizon)
                model = DemandModel(horizon=horizon, num_threads=NUM_THREADS, season_pace=pace)
                fc = model.fit(orders, origin_as_of(origin), items).artifact_.forecast_arrays(
                    wd.items[sel], horizon
                )
                quant = np.stack([fc["p10"], fc["p50"], fc["p90"]])
                k = kind[wd.items[sel].astype(int) - 10000]
                row = _row(
                    f"D@{origin}", f"shopml season_pace={pace}", seed=seed,
                    **point_metrics(hist, y, fc["point"]), **quantile_metrics(y, quant),
                    mase_early=point_metrics(hist[k == 0], y[k == 0], fc["point"][k == 0])["mase"],
                    mase_late=point_metrics(hist[k == 1], y[k == 1], fc["point"][k == 1])["mase"],
                )  # fmt: skip
                per.append(row)
                log.info("%s", row)
            keys = [k for k in per[0] if isinstance(per[0][k], float)]
            mean = {k: float(np.mean([r[k] for r in per])) for k in keys}
            rows += [*per, _row("D-mean", f"shopml season_pace={pace}", seed=seed, **mean)]
            log.info("%s", rows[-1])
    if write:
        write_results(
            "online-retail",
            "D",
            rows,
            as_of=max(SEASON_ORIGINS),
            stem="online-retail-D-season-synthetic",
            note="synthetic gift-season shops (training.benchmarks.demand.season_shop, seeds "
            f"{list(seeds)}): early and late December sellers, shop-wide vs per-item season pace",
        )
    return rows


def main() -> None:
    """Load ../shared/data Online Retail and run protocol D."""
    from features.io import load_dataset

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    import argparse

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--validation", action="store_true", help="validation origins only")
    parser.add_argument("--note", default=None, help="what changed since the last test look")
    parser.add_argument(
        "--season-check",
        action="store_true",
        help="synthetic gift-season shops, shop-wide vs per-item season pace (no real data)",
    )
    parser.add_argument(
        "--bulk-cap",
        type=float,
        default=None,
        help="with --validation: DemandModel(bulk_cap=...) (mean4/tsb on winsorised history)",
    )
    parser.add_argument(
        "--weekly",
        action="store_true",
        help="with --validation: nine weekly origins 2011-05-08 to 2011-07-03",
    )
    args = parser.parse_args()
    if (args.bulk_cap is not None or args.weekly) and not args.validation:
        parser.error("--bulk-cap/--weekly are validation options (test looks run the default)")
    if args.season_check:
        season_check()
        return
    dataset = load_dataset(DATA / "online_retail.parquet")
    if args.validation:
        rows = validate(dataset, args.bulk_cap, args.weekly)
    else:
        rows = run(dataset, note=args.note)
    for r in rows:
        if r["model"] == "shopml":
            log.info("%s", {k: v for k, v in r.items() if k != "combination"})


if __name__ == "__main__":
    main()
