"""``shopml score``: batch outputs of the champion models as Parquet, logged to an MLflow run.

- ``customers.parquet``: every customer's churn and repurchase probability, expected value, value
  at risk, segment and reasons (from the champions' score tables);
- ``forecasts.parquet``: every item's weekly P10/P50/P90 for the whole horizon;
- ``inventory.parquet``: per item the reorder point, safety stock, order-up-to level, stock-out
  probability and flags for a lead time and service level (stock on hand from the items table
  when it has one, else 0).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from features.io import atomic_dir, write_parquet
from shopml.artifacts.registry import load_artifact
from training.tracking import Tracker, scratch_dir

log = logging.getLogger(__name__)


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
    return out.reset_index()


def inventory_table(
    artifact: object,
    *,
    lead_time_weeks: float,
    service_level: float,
    stock_on_hand: pd.Series | None = None,
) -> pd.DataFrame:
    """Reorder advice for every item of a demand artifact (see :func:`inventory.plan`)."""
    from shopml.artifacts.inventory import plan

    items = list(artifact.items)  # type: ignore[attr-defined]
    arrays = artifact.forecast_arrays(items, artifact.horizon)  # type: ignore[attr-defined]
    info = artifact.item_info(items)  # type: ignore[attr-defined]
    on_hand = (
        stock_on_hand.reindex(pd.Index(items).astype(str)).fillna(0.0).to_numpy()
        if stock_on_hand is not None
        else 0.0
    )
    result = plan(
        arrays["p10"],
        arrays["p50"],
        arrays["p90"],
        lead_time=lead_time_weeks,
        service_level=service_level,
        on_hand=on_hand,
        price=info["price"].to_numpy(),
    )
    frame = pd.DataFrame({"item_id": [str(i) for i in items], **result})
    frame.insert(1, "name", info["name"].to_numpy())
    frame.insert(2, "category", info["category"].to_numpy())
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
            frames["forecasts"] = demand.forecast(list(demand.items), demand.horizon)
            frames["inventory"] = inventory_table(
                demand,
                lead_time_weeks=lead_time_weeks,
                service_level=service_level,
                stock_on_hand=stock_on_hand,
            )
    if not frames:
        raise ValueError("no champion model to score with: run `shopml train` first")
    with atomic_dir(out) as folder:
        for name, frame in frames.items():
            write_parquet(frame, folder / f"{name}.parquet")
    with tracker.run("score"):
        tracker.log_params({"lead_time_weeks": lead_time_weeks, "service_level": service_level})
        for name in frames:
            tracker.log_artifact_file(out / f"{name}.parquet", "batch")
    return {name: len(frame) for name, frame in frames.items()}
