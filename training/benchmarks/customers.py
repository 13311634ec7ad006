"""Protocol C of ``../shared/BENCHMARKS.md``: churn90 and repurchase30 on Online Retail and CDNOW.

Population: customers with >= 1 purchase before ``as_of``. Labels from purchases in
``[as_of, as_of + H)``. Models train only on cutoffs whose label window ends by ``as_of``.
Rows: ``shopml`` (the served model: LightGBM or the baseline it fell back to) and one row per
reference (recency, frequency, bg/nbd, lightgbm-rfm), each calibrated on the validation cutoff
(the served LightGBM: cross-fitted calibration, see :mod:`training.customers`). Every run that
writes results counts as one more look at the test window (``test_looks``).

Run: ``python -m training.benchmarks.customers --dataset online-retail|cdnow``.
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from features.labels import churn_labels, repurchase_labels
from features.schema import purchases
from training.benchmarks import next_test_look, write_results
from training.customers import (
    REFERENCE_NAMES,
    ChurnModel,
    RepurchaseModel,
    classification_metrics,
    reliability_curve,
    uses_optional,
)
from training.snapshots import customer_features

log = logging.getLogger(__name__)

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"


@dataclass(frozen=True)
class Spec:
    """Where a data set lives and its protocol-C constants."""

    path: Path
    as_of: str
    population: int


SPECS = {
    "online-retail": Spec(DATA / "online_retail" / "online_retail.parquet", "2011-09-01", 3314),
    "cdnow": Spec(DATA / "cdnow" / "cdnow_master.parquet", "1997-10-01", 23570),
}
TASKS = {"churn90": (ChurnModel, 90), "repurchase30": (RepurchaseModel, 30)}

#: The project's configuration per task (chosen on validation cutoffs before as_of, see README).
SHOPML_CONFIG: dict[str, dict[str, Any]] = {
    "churn90": {},
    "repurchase30": {},
}


def evaluate(
    orders: pd.DataFrame,
    as_of: str,
    task: str,
    *,
    items: pd.DataFrame | None = None,
    customers: pd.DataFrame | None = None,
    num_threads: int = 2,
    config: dict[str, Any] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Fit at ``as_of`` and score every candidate on the window after it. Returns rows + details."""
    cls, horizon = TASKS[task]
    cfg = {**SHOPML_CONFIG[task], **(config or {})}
    t0 = time.perf_counter()
    model = cls(num_threads=num_threads, **cfg).fit(orders, as_of, items=items, customers=customers)
    fit_s = time.perf_counter() - t0
    buys = purchases(orders)
    optional = uses_optional(cfg.get("features") or ())
    feats = customer_features(orders, as_of, items=items, customers=customers, optional=optional)
    label_fn = churn_labels if task == "churn90" else repurchase_labels
    y = label_fn(buys, as_of, feats.index, horizon).to_numpy()
    rows: list[dict[str, Any]] = []
    details: dict[str, Any] = {
        "population": len(feats),
        "base_rate": float(y.mean()),
        "chosen": model.chosen_,
        "validation_cutoff": str(model.validation_cutoff_.date()),
        "training_cutoffs": [str(c.date()) for c in model.training_cutoffs_],
        "label_horizon_days": model.label_horizon_,
        "calibration": model.calibration_,
        "blended_with_bgnbd": model.blend_,
        "validation": model.validation_,
        "bgnbd": None
        if model.bgnbd_fit_ is None
        else {
            "params": model.bgnbd_fit_.params,
            "converged": model.bgnbd_fit_.converged,
            "message": model.bgnbd_fit_.message,
        },
    }
    for name, art in [("shopml", model.artifact_), *model.candidates_.items()]:
        assert art is not None
        t1 = time.perf_counter()
        p = art.predict_proba(feats[art.feature_names].to_numpy(np.float64))
        row: dict[str, Any] = {"task": task, "model": REFERENCE_NAMES.get(name, name)}
        row.update(classification_metrics(y, p))
        if name == "shopml":
            row["served"] = REFERENCE_NAMES.get(art.kind, art.kind)
            row["fit_s"] = round(fit_s, 2)
            row["predict_s"] = round(time.perf_counter() - t1, 3)
            details["reliability"] = reliability_curve(y, p)
        if name == "lightgbm" and model.chosen_ == "lightgbm":
            continue  # identical to the shopml row
        rows.append(row)
    return rows, details


def run(
    dataset: str,
    name: str | None = None,
    *,
    num_threads: int = 2,
    write: bool = True,
    **extra: Any,
) -> list[dict[str, Any]]:
    """Protocol C on ``dataset`` (a path or a Dataset-like object) named ``name``; writes results."""
    from features.io import load_dataset

    key = name or str(dataset)
    spec = SPECS.get(key)
    path = spec.path if spec is not None and dataset == key else Path(str(dataset))
    ds = load_dataset(path)
    as_of = spec.as_of if spec else str(pd.Timestamp(ds.orders["ordered_at"].max()).date())
    rows: list[dict[str, Any]] = []
    details: dict[str, Any] = {}
    for task in TASKS:
        r, d = evaluate(
            ds.orders, as_of, task, items=ds.items, customers=ds.customers, num_threads=num_threads
        )
        rows += r
        details[task] = d
        if spec is not None and d["population"] != spec.population:
            log.warning(
                "population %d differs from the protocol's %d", d["population"], spec.population
            )
        log.info("%s %s: %s", key, task, r[0])
    if write:
        look = next_test_look(key, "C", extra.pop("note", None))
        write_results(key, "C", rows, as_of=as_of, details=details, **{**look, **extra})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=sorted(SPECS), required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--note", default=None, help="one-line note recorded in the JSON")
    args = parser.parse_args()
    extra: dict[str, Any] = {}
    if args.note:
        extra["note"] = args.note
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    run(args.dataset, args.dataset, num_threads=args.threads, **extra)


if __name__ == "__main__":
    main()
