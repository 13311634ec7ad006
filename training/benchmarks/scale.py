"""Scale benchmark: the pandas engine and the Dask LocalCluster engine side by side, same data.

``python -m training.benchmarks.scale --customers 1000000 --items 50000`` generates (or reuses) a
synthetic shop, then measures each engine in a fresh subprocess (clean peak RSS): read + validate,
the whole feature set, and training the churn LightGBM on stacked snapshots (in process for
pandas, through ``lightgbm.dask`` for Dask). Writes ``experiments/results/scale.json``::

    {"rows": [{"engine": "pandas", "order_lines": N, "customers": N, "items": N,
               "features_s": s, "train_s": s, "peak_rss_gb": g, ...}, {"engine": "dask", ...}]}

Peak RSS of the Dask row is the sum of the peaks of the client process (which also hosts the
scheduler) and of every worker: an upper bound of what the machine held at once.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "experiments" / "results" / "scale.json"
TRAIN_SNAPSHOTS = 3
TRAIN_ROUNDS = 100
HORIZON = 90


def _peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # KiB on Linux


def ensure_shop(folder: Path, customers: int, items: int, seed: int = 0) -> dict[str, Any]:
    """The shop in ``folder`` (generated unless one with the same config is there); its counts."""
    from features.synthetic import SHOP_FILE, ShopConfig, write_shop

    config = ShopConfig(n_customers=customers, n_items=items, seed=seed)
    info = folder / SHOP_FILE
    if info.exists():
        saved = json.loads(info.read_text())
        if saved.get("config") == config.to_dict():
            log.info("reusing %s: %s", folder, saved["counts"])
            return dict(saved["counts"])
    start = time.perf_counter()
    counts = write_shop(config, folder, progress=False)
    log.info("generated %s in %.0f s: %s", folder, time.perf_counter() - start, counts)
    return {**counts, "generate_s": round(time.perf_counter() - start, 1)}


def measure(engine: str, folder: Path, workers: int, train: bool) -> dict[str, Any]:
    """Run one engine on the shop in ``folder`` (call in a fresh process); the result row."""
    import pandas as pd

    from features.io import load_dataset
    from features.pipeline import build_feature_set, default_as_of
    from training import dask_models as dm

    start = time.perf_counter()
    dataset = load_dataset(folder)
    load_s = time.perf_counter() - start
    as_of = default_as_of(dataset.orders) - pd.Timedelta(days=HORIZON)  # labels are computed too
    cutoffs = dm.snapshot_cutoffs(as_of, HORIZON, TRAIN_SNAPSHOTS)
    row: dict[str, Any] = {"engine": engine, "order_lines": len(dataset.orders)}
    if engine == "pandas":
        start = time.perf_counter()
        fs = build_feature_set(dataset, as_of)
        row["features_s"] = round(time.perf_counter() - start, 2)
        if train:
            start = time.perf_counter()
            tables = {"items": dataset.items, "customers": dataset.customers}
            snaps = dm.pandas_snapshots(dataset.orders, cutoffs, HORIZON, **tables)
            row["snapshots_s"] = round(time.perf_counter() - start, 2)
            dm.fit_local(snaps, rounds=TRAIN_ROUNDS)
            row["train_s"] = round(time.perf_counter() - start, 2)
        row["peak_rss_gb"] = round(_peak_gb(), 3)
    else:
        from features.engine import DaskOrders, dask_client

        with (
            tempfile.TemporaryDirectory(prefix="shopml-dask-") as scratch,
            dask_client(n_workers=workers, local_directory=scratch) as client,
        ):
            start = time.perf_counter()
            data = DaskOrders(client, dataset)
            distribute_s = time.perf_counter() - start
            fs = data.feature_set(as_of)
            row["features_s"] = round(time.perf_counter() - start, 2)
            row["distribute_s"] = round(distribute_s, 2)
            if train:
                start = time.perf_counter()
                snaps = dm.dask_snapshots(data, cutoffs, HORIZON)
                row["snapshots_s"] = round(time.perf_counter() - start, 2)
                dm.fit_dask(client, snaps, rounds=TRAIN_ROUNDS)
                row["train_s"] = round(time.perf_counter() - start, 2)
            worker_peaks = client.run(_peak_gb)
            row["workers"] = workers
            row["client_peak_rss_gb"] = round(_peak_gb(), 3)
            row["worker_peak_rss_gb"] = [round(v, 3) for v in worker_peaks.values()]
            row["peak_rss_gb"] = round(_peak_gb() + sum(worker_peaks.values()), 3)
    row.update(
        customers=len(fs.users),
        items=len(fs.items),
        load_validate_s=round(load_s, 2),
        features_rows_per_s=round(row["order_lines"] / row["features_s"]),
        steps_s=fs.timings_s,
        as_of=str(as_of.date()),
        train_model=(
            f"churn LightGBM, {TRAIN_ROUNDS} rounds on {TRAIN_SNAPSHOTS} stacked monthly snapshots "
            f"(features of every snapshot included)"
            if train
            else None
        ),
    )
    return row


def run(
    customers: int,
    items: int,
    *,
    workdir: Path,
    engines: tuple[str, ...] = ("pandas", "dask"),
    workers: int = 2,
    train: bool = True,
    out: Path = RESULTS,
) -> list[dict[str, Any]]:
    """Generate/reuse the shop, measure every engine in its own subprocess, write ``out``."""
    shop = workdir / f"shop-{customers}-{items}"
    counts = ensure_shop(shop, customers, items)
    rows = []
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "OPENBLAS_NUM_THREADS": "1"}
    env.setdefault("OMP_NUM_THREADS", "1")
    for engine in engines:
        with tempfile.NamedTemporaryFile(suffix=".json") as result:
            cmd = [sys.executable, "-m", "training.benchmarks.scale", "--measure", engine]
            cmd += ["--data", str(shop), "--workers", str(workers), "--result", result.name]
            cmd += [] if train else ["--no-train"]
            log.info("measuring %s on %s order lines", engine, f"{counts['order_lines']:,}")
            start = time.perf_counter()
            subprocess.run(cmd, check=True, cwd=ROOT, env=env)
            row = json.loads(Path(result.name).read_text())
        row["process_s"] = round(time.perf_counter() - start, 1)
        rows.append(row)
        log.info("%s: %s", engine, {k: v for k, v in row.items() if k != "steps_s"})
    out.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "benchmark": "scale",
        "machine": f"{os.cpu_count()} cores",
        "shop": {"customers": customers, "items": items, **counts},
        "rows": rows,
    }
    out.write_text(json.dumps(payload, indent=2) + "\n")
    _write_markdown(payload, out.with_suffix(".md"))
    log.info("wrote %s", out)
    return rows


def _write_markdown(payload: dict[str, Any], path: Path) -> None:
    cols = ["engine", "order_lines", "customers", "items", "features_s", "train_s", "peak_rss_gb"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in payload["rows"]:
        lines.append("| " + " | ".join(f"{row.get(c, '')}" for c in cols) + " |")
    path.write_text(f"# Scale benchmark ({payload['machine']})\n\n" + "\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--items", type=int, default=50_000)
    parser.add_argument(
        "--workdir", type=Path, default=Path(tempfile.gettempdir()) / "shopml-scale"
    )
    parser.add_argument("--engines", nargs="+", default=["pandas", "dask"])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--no-train", dest="train", action="store_false")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--measure", choices=["pandas", "dask"], help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("distributed").setLevel(logging.WARNING)
    if args.measure:
        row = measure(args.measure, args.data, args.workers, args.train)
        args.result.write_text(json.dumps(row))
        return
    run(
        args.customers,
        args.items,
        workdir=args.workdir,
        engines=tuple(args.engines),
        workers=args.workers,
        train=args.train,
        out=args.out,
    )


if __name__ == "__main__":
    main()
