"""The feature set as of a date: every pipeline run on one dataset, plus its manifest."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from features import demand, interactions, items, labels, users
from features.io import Dataset, atomic_dir, write_json, write_parquet
from features.memory import map_large_arrays
from features.purchases import Purchases, as_timestamp
from features.schema import (
    ITEM_ID,
    ORDERED_AT,
    ContractError,
)
from features.threads import helpers

log = logging.getLogger(__name__)


@dataclass
class FeatureSet:
    """User, item, interaction, demand features and labels as of one date."""

    as_of: pd.Timestamp
    users: pd.DataFrame
    items: pd.DataFrame
    interactions: interactions.Interactions
    demand: demand.WeeklyDemand
    labels: pd.DataFrame | None
    timings_s: dict[str, float] = field(default_factory=dict)


def default_as_of(orders: pd.DataFrame) -> pd.Timestamp:
    """The day after the last order: features then use every order there is."""
    return pd.Timestamp(orders[ORDERED_AT].max()).normalize() + pd.Timedelta(days=1)


def check_as_of(orders: pd.DataFrame, as_of: pd.Timestamp) -> None:
    """Refuse an ``as_of`` at or before the first order (no history to build features from)."""
    first = pd.Timestamp(orders[ORDERED_AT].min())
    if as_of <= first:
        raise ContractError(f"as_of {as_of.date()} is on or before the first order ({first})")


def build_feature_set(
    dataset: Dataset,
    as_of: pd.Timestamp | str | None = None,
    *,
    churn_days: int = 90,
    repurchase_days: int = 30,
    value_days: int = 365,
    threads: int | None = None,
) -> FeatureSet:
    """Run every feature pipeline on ``dataset`` as of ``as_of`` (default: after the last order).

    Labels are computed only when the data extends past ``as_of`` (a backtest date).
    ``threads`` (default :func:`~features.threads.feature_threads`): with two or more, weekly
    demand runs on a second thread (its ``timings_s`` overlap the others'); the result is the
    same for any number.
    """
    map_large_arrays()  # freed arrays go back to the system: peak RSS near the live arrays
    orders = dataset.orders
    as_of = default_as_of(orders) if as_of is None else as_timestamp(as_of)
    check_as_of(orders, as_of)
    timings: dict[str, float] = {}

    def timed(name: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        result = fn(*args, **kwargs)
        timings[name] = round(time.perf_counter() - start, 3)
        log.info("%s features: %.2f s", name, timings[name])
        return result

    # Weekly demand reads only the orders: it runs beside the steps with the smallest
    # temporaries (the shared purchases, the item line scan) and is waited for before the
    # purchase chains are sorted (its peak over theirs would add up: +0.05-0.1 GB per 5M lines).
    # Users after items: the largest result is not held while items run, and the order-level
    # arrays only users read are built inside that step and dropped with it.
    with helpers(threads) as pool:
        weekly_f = pool.submit(timed, "demand", demand.weekly_demand, orders, as_of)
        bought = timed("purchases", Purchases.of, orders, as_of)
        line_stats = timed("item_lines", items.line_statistics, bought)
        weekly = weekly_f.result()
        item_frame = timed(
            "items", items.item_features_of, bought, items=dataset.items, line_stats=line_stats
        )
        del line_stats
        user_frame = timed(
            "users",
            users.user_features_of,
            bought,
            items=dataset.items,
            customers=dataset.customers,
        )
        matrix = timed(
            "interactions", interactions.build_interactions, orders, as_of, purchases=bought
        )
        del bought
    label_frame = None
    if pd.Timestamp(orders[ORDERED_AT].max()) >= as_of:
        label_frame = timed(
            "labels",
            customer_labels,
            orders,
            as_of,
            user_frame.index,
            churn_days=churn_days,
            repurchase_days=repurchase_days,
            value_days=value_days,
        )
    return FeatureSet(as_of, user_frame, item_frame, matrix, weekly, label_frame, timings)


def customer_labels(
    orders: pd.DataFrame,
    as_of: pd.Timestamp,
    population: pd.Index,
    *,
    churn_days: int = 90,
    repurchase_days: int = 30,
    value_days: int = 365,
) -> pd.DataFrame:
    """Churn, repurchase and future spend of ``population``, from orders on/after ``as_of``.

    ``*_covered`` columns say whether the data reaches the end of each label window.
    """
    frame = pd.concat(
        [
            labels.churn_labels(orders, as_of, population, churn_days),
            labels.repurchase_labels(orders, as_of, population, repurchase_days),
            labels.future_spend(orders, as_of, population, value_days),
        ],
        axis=1,
    )
    for name, days in (
        ("churn", churn_days),
        ("repurchase", repurchase_days),
        ("spend", value_days),
    ):
        frame[f"{name}_covered"] = labels.label_window_covered(orders, as_of, days)
    return frame


def demand_frame(weekly: demand.WeeklyDemand) -> pd.DataFrame:
    """Weekly demand in long form: item_id, week (ending Sunday), units, price."""
    n_items, n_weeks = weekly.units.shape
    return pd.DataFrame(
        {
            ITEM_ID: np.repeat(weekly.items.to_numpy(), n_weeks),
            "week": np.tile(weekly.weeks.to_numpy(), n_items),
            "units": weekly.units.ravel(),
            "price": weekly.price.ravel(),
        }
    )


def write_feature_set(fs: FeatureSet, dataset: Dataset, out: Path) -> Path:
    """Write the feature set as Parquet (+ the interaction matrix as ``.npz``) and a manifest.

    Written into a temporary folder and moved into place whole; quarantined rows go to
    ``quarantine_<table>.parquet`` beside the features.
    """
    with atomic_dir(out) as tmp:
        write_parquet(fs.users.reset_index(), tmp / "users.parquet")
        write_parquet(fs.items.reset_index(), tmp / "items.parquet")
        write_parquet(demand_frame(fs.demand), tmp / "demand.parquet")
        if fs.labels is not None:
            write_parquet(fs.labels.reset_index(), tmp / "labels.parquet")
        m = fs.interactions
        sp.save_npz(tmp / "interactions.npz", m.matrix.tocsr())
        np.savez(
            tmp / "interaction_ids.npz", users=m.user_ids.astype(str), items=m.item_ids.astype(str)
        )
        for table, rows in dataset.quarantine.items():
            if len(rows):
                write_parquet(rows.astype("string"), tmp / f"quarantine_{table}.parquet")
        write_json(manifest(fs, dataset), tmp / "manifest.json")
    return out


def manifest(fs: FeatureSet, dataset: Dataset) -> dict[str, Any]:
    """as_of, sources and their hashes, row counts, feature lists, validation summary, timings."""
    return {
        "as_of": str(fs.as_of.date()),
        **dataset.summary(),
        "rows": {
            "orders": len(dataset.orders),
            "users": len(fs.users),
            "items": len(fs.items),
            "demand_items": len(fs.demand.items),
            "demand_weeks": len(fs.demand.weeks),
            "labels": 0 if fs.labels is None else len(fs.labels),
            "interactions_nnz": int(fs.interactions.matrix.nnz),
        },
        "features": {
            "users": list(fs.users.columns),
            "items": list(fs.items.columns),
            "demand": ["units", "price"],
            "labels": [] if fs.labels is None else list(fs.labels.columns),
        },
        "timings_s": fs.timings_s,
    }
