"""``shopml score``: batch outputs of the champion models as Parquet, logged to an MLflow run.

Column names are those of the API (``churn_probability``, ``week_ending``,
``stockout_probability``, ...), so one glossary serves both:

- ``customers.parquet``: one row per customer: ``customer_id``, ``segment``,
  ``churn_probability``, ``repurchase_probability``, ``value`` (expected spend over the value
  horizon, in the shop's currency), ``value_at_risk`` (churn probability x value),
  ``churn_reasons`` and ``repurchase_reasons`` (plain phrases joined by ``"; "``), ``as_of``;
- ``forecasts.parquet``: one row per item and week: ``item_id``, ``week_ending`` (Sunday),
  ``weeks_ahead`` (1..12), ``p10``/``p50``/``p90`` and ``point_forecast`` (units sold that week
  from ``as_of`` on: when ``as_of`` falls mid-week, week 1 is only the rest of that week, as in
  the API) and ``share_ahead`` (the share of the week's units still ahead: 1 but for that week);
- ``inventory.parquet``: one row per item: ``item_id``, ``name``, ``category``,
  ``stock_on_hand`` (units: ``--items``, else the items table the model was
  trained with; empty when unknown), ``lead_time_weeks``,
  ``service_level``, then reorder point (lead time counted from ``as_of``), safety stock, order-up-to level (units) and, only where
  the stock is known, ``order_quantity``, ``stockout_probability``, ``weeks_of_cover``, the
  ``stockout_risk``/``overstock`` flags and ``revenue_at_risk``/``overstock_value`` (currency).
  An item without a known stock is not reported as out of stock.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from features.io import atomic_dir, write_parquet
from shopml.artifacts.registry import load_artifact
from training.tracking import Tracker, scratch_dir

log = logging.getLogger(__name__)


#: Score-table columns renamed to the API's names.
CUSTOMER_COLUMNS = {
    "churn_proba": "churn_probability",
    "repurchase_proba": "repurchase_probability",
}
CUSTOMER_ORDER = (
    "customer_id",
    "segment",
    "churn_probability",
    "repurchase_probability",
    "value",
    "value_at_risk",
    "churn_reasons",
    "repurchase_reasons",
    "as_of",
)
#: Inventory columns that need the stock on hand: empty (NaN / <NA>) for items without one.
STOCK_COLUMNS = (
    "order_quantity",
    "stockout_probability",
    "weeks_of_cover",
    "stockout_risk",
    "overstock",
    "revenue_at_risk",
    "overstock_value",
)


def customer_table(churn: pd.DataFrame | None, repurchase: pd.DataFrame | None) -> pd.DataFrame:
    """One row per customer from the churn (with value) and repurchase score tables."""
    tables = []
    if churn is not None:
        tables.append(churn.rename(columns={"reasons": "churn_reasons"}).set_index("customer_id"))
    if repurchase is not None:
        rep = repurchase.rename(columns={"reasons": "repurchase_reasons"}).set_index("customer_id")
        tables.append(rep.drop(columns=[c for c in ("segment", "as_of") if c in rep and tables]))
    if not tables:
        return pd.DataFrame()
    out = tables[0]
    for table in tables[1:]:
        out = out.join(table, how="outer")
    out = out.reset_index().rename(columns=CUSTOMER_COLUMNS)
    first = [c for c in CUSTOMER_ORDER if c in out.columns]
    return out[first + [c for c in out.columns if c not in first]]


def forecast_table(artifact: object) -> pd.DataFrame:
    """Every item's weekly forecast, long: one row per item and week ahead."""
    items = list(artifact.items)  # type: ignore[attr-defined]
    frame = artifact.forecast(items, artifact.horizon)  # type: ignore[attr-defined]
    frame = frame.rename(
        columns={"week": "week_ending", "h": "weeks_ahead", "point": "point_forecast"}
    )
    frame["week_ending"] = pd.to_datetime(frame["week_ending"]).dt.date
    # week 1 of a mid-week as_of is the demand still ahead: share_ahead < 1 says so, as in the API
    return frame


def inventory_table(
    artifact: object,
    *,
    lead_time_weeks: float,
    service_level: float,
    stock_on_hand: pd.Series | None = None,
) -> pd.DataFrame:
    """Reorder advice for every item of a demand artifact (see :func:`inventory.plan`).

    ``stock_on_hand`` (units by item id) gives the stock, over the items table's stock the model
    was trained with (as the API's default); an item neither covers has no stock-dependent
    figures rather than a stock of 0, which would flag the whole catalogue as out of stock.
    """
    from shopml.artifacts.inventory import plan

    items = list(artifact.items)  # type: ignore[attr-defined]
    arrays = artifact.forecast_arrays(items, artifact.horizon)  # type: ignore[attr-defined]
    info = artifact.item_info(items)  # type: ignore[attr-defined]
    ids = pd.Index([str(i) for i in items])
    known_stock = (getattr(artifact, "meta", None) or {}).get("stock_on_hand") or {}
    stock = pd.Series(known_stock, dtype=np.float64)
    if stock_on_hand is not None:
        given = stock_on_hand.set_axis(stock_on_hand.index.astype(str)).astype(np.float64)
        given = given[~given.index.duplicated(keep="last")].dropna()
        stock = pd.concat([stock.drop(given.index, errors="ignore"), given])
    on_hand = stock.reindex(ids).to_numpy(dtype=np.float64)
    known = np.isfinite(on_hand)
    result = plan(
        arrays["p10"],
        arrays["p50"],
        arrays["p90"],
        lead_time=lead_time_weeks,
        service_level=service_level,
        on_hand=np.where(known, on_hand, 0.0),
        first_week_span=float(getattr(artifact, "first_week_span", 1.0)),
        price=info["price"].to_numpy(),
    )
    result["stockout_probability"] = result.pop("p_stockout")
    frame = pd.DataFrame(
        {
            "item_id": ids,
            "name": info["name"].to_numpy(),
            "category": info["category"].to_numpy(),
            "stock_on_hand": on_hand,
            "lead_time_weeks": float(lead_time_weeks),
            "service_level": float(service_level),
        }
    )
    for col in (
        "expected_lead_time_demand",
        "reorder_point",
        "safety_stock",
        "order_up_to",
        *STOCK_COLUMNS,
    ):
        values = np.asarray(result[col])
        if values.dtype == bool:
            frame[col] = pd.array(values, dtype="boolean")
            frame.loc[~known, col] = pd.NA
        else:
            values = values.astype(np.float64)
            if col in STOCK_COLUMNS:
                values = np.where(known & np.isfinite(values), values, np.nan)
            frame[col] = values
    return frame


def score(
    tracker: Tracker,
    out: Path,
    *,
    lead_time_weeks: float = 2.0,
    service_level: float = 0.95,
    stock_on_hand: pd.Series | None = None,
) -> dict[str, int]:
    """Write the batch outputs of every champion into ``out`` (atomically); log them to MLflow."""
    frames: dict[str, pd.DataFrame] = {}
    with scratch_dir() as tmp:
        tables = {}
        for kind in ("churn", "repurchase", "demand"):
            if tracker.champion(kind) is None:
                log.warning("%s: no champion; its batch output is skipped", kind)
                continue
            tables[kind] = load_artifact(tracker.download(kind, Path(tmp) / kind)).artifact
        if "churn" in tables or "repurchase" in tables:
            frames["customers"] = customer_table(
                getattr(tables.get("churn"), "scores", None),
                getattr(tables.get("repurchase"), "scores", None),
            )
        if "demand" in tables:
            demand = tables["demand"]
            frames["forecasts"] = forecast_table(demand)
            frames["inventory"] = inventory_table(
                demand,
                lead_time_weeks=lead_time_weeks,
                service_level=service_level,
                stock_on_hand=stock_on_hand,
            )
            unknown = int(frames["inventory"]["stock_on_hand"].isna().sum())
            if unknown:
                log.warning(
                    "inventory: %d of %d items have no stock on hand (neither in the items table "
                    "the model was trained with nor in --items): their order quantities, "
                    "stock-out risk and cover are left empty",
                    unknown,
                    len(frames["inventory"]),
                )
    if not frames:
        raise ValueError("no champion model to score with: run `shopml train` first")
    try:
        with atomic_dir(out) as folder:
            for name, frame in frames.items():
                write_parquet(frame, folder / f"{name}.parquet")
    except OSError as exc:
        if exc.strerror is None:  # atomic_dir's own refusal names the folder already
            raise
        raise OSError(f"--out {out}: cannot write there ({exc.strerror})") from exc
    with tracker.run("score"):
        tracker.log_params({"lead_time_weeks": lead_time_weeks, "service_level": service_level})
        for name in frames:
            tracker.log_artifact_file(out / f"{name}.parquet", "batch")
    return {name: len(frame) for name, frame in frames.items()}
