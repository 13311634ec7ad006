"""Protocol C of ``../shared/BENCHMARKS.md``: churn90 and repurchase30 on Online Retail and CDNOW.

Population: customers with >= 1 purchase before ``as_of``. Labels from purchases in
``[as_of, as_of + H)``. Models train only on cutoffs whose label window ends by ``as_of``.
Rows: ``shopml`` (the served model: LightGBM or the baseline it fell back to) and one row per
reference (recency, frequency, bg/nbd, lightgbm-rfm), each calibrated on the validation cutoff
(the served LightGBM: cross-fitted calibration, see :mod:`training.customers`). Every run that
writes results counts as one more look at the test window (``test_looks``).

Run: ``python -m training.benchmarks.customers --dataset online-retail|cdnow``.

Validation replay (no test label read, no test look): ``--validation`` fits and scores the same
rows at the earlier ``as_of`` dates of :data:`VALIDATION_AS_OF`, whose label windows end by the
protocol's ``as_of`` (or at the dates given with ``--validation-as-of``), and writes
``<dataset>-C-validation.json``/``.md``. This is where calibration and model changes are judged.
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
from training.customers import REFERENCE_NAMES, ChurnModel, RepurchaseModel
from training.metrics import classification_metrics, reliability_curve
from training.snapshots import UserSnapshots, customer_features, uses_optional

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

#: Validation replays per data set and task: every label window ends by the protocol's as_of
#: (2011-09-01, 1997-10-01). Churn90 has few: its fit needs a 90-day-labelled validation cutoff
#: and a 30-day-labelled training cutoff before it, and the histories start 2010-12 / 1997-01.
VALIDATION_AS_OF: dict[str, dict[str, list[str]]] = {
    "online-retail": {
        "churn90": ["2011-06-01", "2011-05-16"],
        "repurchase30": ["2011-08-01", "2011-07-01", "2011-06-01", "2011-05-01"],
    },
    "cdnow": {
        "churn90": ["1997-07-01"],
        "repurchase30": ["1997-09-01", "1997-08-01", "1997-07-01", "1997-06-01"],
    },
}

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
    snapshots: UserSnapshots | None = None,
    score_table: bool = True,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Fit at ``as_of`` and score every candidate on the window after it. Returns rows + details.

    ``snapshots``: a feature cache of these tables shared by several calls (validation replays);
    ``score_table``: the fit also builds the served score table (reasons included), as
    ``shopml train`` does (part of ``fit_s``).
    """
    cls, horizon = TASKS[task]
    cfg = {**SHOPML_CONFIG[task], **(config or {})}
    optional = uses_optional(cfg.get("features") or ())
    if snapshots is not None and snapshots.optional != optional:
        snapshots = None
    t0 = time.perf_counter()
    model = cls(num_threads=num_threads, **cfg).fit(
        orders, as_of, items=items, customers=customers, snapshots=snapshots, score=score_table
    )
    fit_s = time.perf_counter() - t0
    buys = purchases(orders)
    feats = (
        snapshots.features(pd.Timestamp(as_of))
        if snapshots is not None
        else customer_features(orders, as_of, items=items, customers=customers, optional=optional)
    )
    label_fn = churn_labels if task == "churn90" else repurchase_labels
    y = label_fn(buys, as_of, feats.index, horizon).to_numpy()
    rows: list[dict[str, Any]] = []
    details: dict[str, Any] = {
        "population": len(feats),
        "base_rate": float(y.mean()),
        "mean_probability": None,
        "chosen": model.chosen_,
        "validation_cutoff": str(model.validation_cutoff_.date()),
        "training_cutoffs": [str(c.date()) for c in model.training_cutoffs_],
        "label_horizon_days": model.label_horizon_,
        "cutoffs_per_month": model.cutoffs_per_month_,
        "calibration": model.calibration_,
        "blended_with_bgnbd": model.blend_,
        "validation": model.validation_,
        "bgnbd": None
        if model.bgnbd_fit_ is None
        else {
            "params": model.bgnbd_fit_.params,
            "converged": model.bgnbd_fit_.converged,
            "message": model.bgnbd_fit_.message,
            "limit": model.bgnbd_fit_.limit,
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
            details["mean_probability"] = float(np.mean(p))
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


def replay_at(
    ds: Any,
    day: str,
    task: str,
    snapshots: UserSnapshots,
    config: dict[str, Any] | None,
    num_threads: int,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """:func:`evaluate` at the validation as_of ``day`` on a loaded data set, sharing
    ``snapshots`` across replays; the shopml row also gets ``brier_vs_best_ref``, its Brier
    minus the best reference's."""
    rows, details = evaluate(
        ds.orders,
        day,
        task,
        items=ds.items,
        customers=ds.customers,
        num_threads=num_threads,
        config=config,
        snapshots=snapshots,
        score_table=False,
    )
    refs = [x["brier"] for x in rows if x["model"] not in ("shopml", "lightgbm")]
    for row in rows:
        if row["model"] == "shopml" and refs:
            row["brier_vs_best_ref"] = round(row["brier"] - min(refs), 5)
    return rows, details


def validate(
    dataset: str,
    as_ofs: dict[str, list[str]] | None = None,
    *,
    num_threads: int = 2,
    write: bool = True,
    config: dict[str, dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """Protocol C replayed at validation ``as_of`` dates (default :data:`VALIDATION_AS_OF`) of
    ``dataset`` (a key of :data:`SPECS`): rows as :func:`evaluate`'s with their ``as_of``, plus a
    ``brier_vs_best_ref`` on each shopml row (its Brier minus the best reference's). Refuses a
    date whose label window would reach the test window. Writes ``<dataset>-C-validation``."""
    from features.io import load_dataset

    spec = SPECS[dataset]
    dates = as_ofs if as_ofs is not None else VALIDATION_AS_OF[dataset]
    for task, days in dates.items():
        horizon = TASKS[task][1]
        for day in days:
            end = pd.Timestamp(day) + pd.Timedelta(days=horizon)
            if end > pd.Timestamp(spec.as_of):
                raise ValueError(
                    f"validation as_of {day}: its {task} window ends {end.date()}, after the "
                    f"test as_of {spec.as_of}"
                )
    ds = load_dataset(spec.path)
    cache = UserSnapshots(ds.orders, items=ds.items, customers=ds.customers)
    rows: list[dict[str, Any]] = []
    details: dict[str, Any] = {}
    for task, days in dates.items():
        for day in days:
            r, d = replay_at(ds, day, task, cache, (config or {}).get(task), num_threads)
            for row in r:
                row["as_of"] = day
            rows += r
            d.pop("reliability", None)
            details[f"{task}@{day}"] = d
            log.info("%s %s at %s: %s", dataset, task, day, r[0])
    if write:
        write_results(
            dataset,
            "C",
            rows,
            as_of=spec.as_of,
            details=details,
            stem=f"{dataset}-C-validation",
            note="validation replays only: every label window ends by the test as_of",
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", choices=sorted(SPECS), required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--note", default=None, help="one-line note recorded in the JSON")
    parser.add_argument(
        "--validation",
        action="store_true",
        help="validation replays at earlier as_of dates only (no test label read)",
    )
    parser.add_argument(
        "--validation-as-of",
        action="append",
        default=None,
        metavar="DATE",
        help="a validation as_of (repeatable; implies --validation); each task whose label "
        "window ends by the test as_of is replayed there",
    )
    args = parser.parse_args()
    extra: dict[str, Any] = {}
    if args.note:
        extra["note"] = args.note
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.validation or args.validation_as_of:
        dates = None
        if args.validation_as_of:
            test = pd.Timestamp(SPECS[args.dataset].as_of)
            dates = {
                task: [
                    d
                    for d in args.validation_as_of
                    if pd.Timestamp(d) + pd.Timedelta(days=h) <= test
                ]
                for task, (_, h) in TASKS.items()
            }
        validate(args.dataset, dates, num_threads=args.threads)
        return
    run(args.dataset, args.dataset, num_threads=args.threads, **extra)


if __name__ == "__main__":
    main()
