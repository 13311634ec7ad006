"""Scale benchmark: the pandas engine and the Dask LocalCluster engine side by side, same data.

``python -m training.benchmarks.scale --customers 1000000 --items 50000`` generates (or reuses) a
synthetic shop, then measures each engine in a fresh subprocess (clean peak RSS): read + validate,
the whole feature set, and training the churn LightGBM on stacked snapshots (in process for
pandas, through ``lightgbm.dask`` for Dask). Writes ``experiments/results/scale.json``::

    {"rows": [{"engine": "pandas", "order_lines": N, "customers": N, "items": N,
               "features_s": s, "train_s": s, "peak_rss_gb": g, ...}, {"engine": "dask", ...}]}

Peak RSS of the Dask row is the sum of the peaks of the client process (which also hosts the
scheduler) and of every worker: an upper bound of what the machine held at once. ``--full-train``
also runs the whole ``shopml train`` per engine (with Dask: every LightGBM fit through
``lightgbm.dask`` on the LocalCluster). The machine is shared: every row records the 1-minute
load average before and after its measurement (``load_avg``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from training.benchmarks import git_commit, peak_rss_gb

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "experiments" / "results" / "scale.json"
TRAIN_SNAPSHOTS = 3
TRAIN_ROUNDS = 100
HORIZON = 90
#: users whose top-10 the serving measurement times (a fixed random sample above it)
BATCH_USERS = 50_000


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


def load_avg() -> float:
    """The 1-minute load average of the machine (others' jobs included)."""
    return round(os.getloadavg()[0], 2)


def measure(
    engine: str, folder: Path, workers: int, train: bool, partitions: int | None = None
) -> dict[str, Any]:
    """Run one engine on the shop in ``folder`` (call in a fresh process); the result row
    (``partitions``: of the Dask engine's shuffled orders; default two per worker)."""
    import pandas as pd

    from features.io import load_dataset
    from features.pipeline import build_feature_set, default_as_of
    from training import dask_models as dm

    load_before = load_avg()
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
        row["peak_rss_gb"] = round(peak_rss_gb(), 3)
    else:
        from features.engine import DaskOrders, dask_client

        with (
            tempfile.TemporaryDirectory(prefix="shopml-dask-") as scratch,
            dask_client(n_workers=workers, local_directory=scratch) as client,
        ):
            start = time.perf_counter()
            data = DaskOrders(client, dataset, npartitions=partitions)
            row["partitions"] = data.npartitions
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
            worker_peaks = client.run(peak_rss_gb)
            row["workers"] = workers
            row["client_peak_rss_gb"] = round(peak_rss_gb(), 3)
            row["worker_peak_rss_gb"] = [round(v, 3) for v in worker_peaks.values()]
            row["peak_rss_gb"] = round(peak_rss_gb() + sum(worker_peaks.values()), 3)
    row.update(
        customers=len(fs.users),
        items=len(fs.items),
        load_validate_s=round(load_s, 2),
        features_rows_per_s=round(row["order_lines"] / row["features_s"]),
        load_avg=[load_before, load_avg()],
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


def measure_train(
    folder: Path, threads: int, engine: str = "pandas", workers: int = 2
) -> dict[str, Any]:
    """The whole ``shopml train`` (all four models: backtests, fits, registration) on the shop,
    in a throw-away local MLflow store; wall time per model and step, then (pandas) the
    recommender's serving figures measured in a fresh process. ``engine="dask"``: with a
    LocalCluster of ``workers`` processes (``shopml train --engine dask``); peak RSS is then the
    training process's plus every worker's. Call in a fresh process (clean peak RSS)."""
    from features.engine import dask_client
    from features.io import load_dataset
    from shopml.config import Experiment
    from training.tracking import Tracker
    from training.train import train

    row: dict[str, Any] = {"engine": engine, "step": "shopml train (all models)"}
    row["load_avg"] = [load_avg()]
    start = time.perf_counter()
    dataset = load_dataset(folder)
    row["order_lines"] = len(dataset.orders)
    row["load_validate_s"] = round(time.perf_counter() - start, 2)
    with (
        tempfile.TemporaryDirectory(prefix="shopml-scale-mlflow-") as store,
        contextlib.ExitStack() as stack,
    ):
        client = None
        if engine == "dask":
            client = stack.enter_context(dask_client(n_workers=workers, local_directory=store))
        os.environ["SHOPML_ARTIFACT_ROOT"] = (Path(store) / "artifacts").as_uri()
        tracker = Tracker(f"sqlite:///{store}/mlflow.db", experiment="scale")
        exp = Experiment.model_validate({"name": "scale", "data": {"path": str(folder)}})
        start = time.perf_counter()
        results = train(exp, tracker, dataset=dataset, threads=threads, client=client)
        row["train_all_s"] = round(time.perf_counter() - start, 1)
        row["load_avg"].append(load_avg())
        row["models_s"] = {
            r.kind: {
                "total": round(r.seconds, 1),
                "backtest": round(r.backtest_seconds, 1),
                "fit": round(r.fit_seconds, 1),
                "peak_rss_gb_so_far": round(r.peak_rss_gb, 2),
            }
            for r in results
        }
        row["peak_rss_gb"] = round(peak_rss_gb(), 3)
        if client is not None:
            worker_peaks = list(client.run(peak_rss_gb).values())
            row["worker_peak_rss_gb"] = [round(v, 3) for v in worker_peaks]
            row["client_peak_rss_gb"] = row["peak_rss_gb"]
            row["peak_rss_gb"] = round(row["peak_rss_gb"] + sum(worker_peaks), 3)
            return row  # the recommender is trained in process either way: served as measured
        del dataset
        folder_rec = tracker.download("recommender", Path(store) / "recommender")
        probe = [sys.executable, "-m", "training.benchmarks.scale", "--measure", "serving"]
        probe += ["--data", str(folder_rec), "--result", str(Path(store) / "serving.json")]
        subprocess.run(probe, check=True, cwd=ROOT)
        row["recommender_serving"] = json.loads((Path(store) / "serving.json").read_text())
    return row


def _rss_gb() -> float:
    import psutil

    return float(psutil.Process().memory_info().rss) / 1e9


def measure_serving(folder: Path, batch_users: int = BATCH_USERS) -> dict[str, Any]:
    """Load time and resident memory of the recommender as the service loads it, and the time
    to recommend 10 items to every known user (batch): measured on all of them up to
    ``batch_users``, else on a fixed random sample of that many and extrapolated (the row says
    which)."""
    import numpy as np

    from shopml.artifacts.recommender import RecommenderArtifact

    before = _rss_gb()
    start = time.perf_counter()
    rec = RecommenderArtifact.load(folder)
    load_s = time.perf_counter() - start
    loaded = _rss_gb()
    users = list(rec.user_ids)
    sample = users
    if len(users) > batch_users:
        picked = np.random.default_rng(0).choice(len(users), batch_users, replace=False)
        sample = [users[i] for i in np.sort(picked)]
    start = time.perf_counter()
    rec.recommend_batch(sample, k=10)
    batch_s = time.perf_counter() - start
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    row: dict[str, Any] = {
        "users": len(users),
        "items": rec.n_items,
        "artifact_mb": round(size / 1e6, 1),
        "load_s": round(load_s, 2),
        "rss_gb": round(loaded - before, 3),
        "batch_users_measured": len(sample),
        "batch_recommend_s": round(batch_s, 1),
        "batch_users_per_s": round(len(sample) / batch_s),
    }
    key = "batch_recommend_all_users_s" if len(sample) == len(users) else "batch_all_users_est_s"
    row[key] = round(batch_s * len(users) / len(sample), 1)
    return row


def run(
    customers: int,
    items: int,
    *,
    workdir: Path,
    engines: tuple[str, ...] = ("pandas", "dask"),
    workers: int = 2,
    partitions: int | None = None,
    train: bool = True,
    full_train: bool = False,
    threads: int = 2,
    out: Path = RESULTS,
    merge: bool = False,
) -> list[dict[str, Any]]:
    """Generate/reuse the shop, measure every engine in its own subprocess, write ``out``
    (``merge``: keeping the rows ``out`` already has for other shops or engines)."""
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
            cmd += ["--partitions", str(partitions)] if partitions else []
            log.info("measuring %s on %s order lines", engine, f"{counts['order_lines']:,}")
            start = time.perf_counter()
            subprocess.run(cmd, check=True, cwd=ROOT, env=env)
            row = json.loads(Path(result.name).read_text())
        row["process_s"] = round(time.perf_counter() - start, 1)
        rows.append(row)
        log.info("%s: %s", engine, {k: v for k, v in row.items() if k != "steps_s"})
    if full_train:
        for engine in engines:
            whole = _full_train(shop, engine, threads, workers, env)
            row = next(r for r in rows if r["engine"] == engine)
            row["train_all_s"] = whole["train_all_s"]
            row["train_all_peak_rss_gb"] = whole["peak_rss_gb"]
            row["train_all_load_avg"] = whole["load_avg"]
            row |= {k: whole[k] for k in ("models_s", "recommender_serving") if k in whole}
            if "worker_peak_rss_gb" in whole:
                row["train_all_worker_peak_rss_gb"] = whole["worker_peak_rss_gb"]
    out.parent.mkdir(parents=True, exist_ok=True)
    shop_info = {"customers": customers, "items": items, **counts}
    for row in rows:
        row["shop"] = shop_info
        row["commit"] = git_commit()
    if merge and out.exists():
        rows = merge_rows(json.loads(out.read_text()), rows)
    payload = {
        "benchmark": "scale",
        "machine": f"{os.cpu_count()} cores",
        "shop": shop_info,
        "rows": rows,
    }
    out.write_text(json.dumps(payload, indent=2) + "\n")
    _write_markdown(payload, out.with_suffix(".md"))
    log.info("wrote %s", out)
    return rows


def _full_train(
    shop: Path, engine: str, threads: int, workers: int, env: dict[str, str]
) -> dict[str, Any]:
    """The whole ``shopml train`` with ``engine`` in a fresh process (see :func:`measure_train`)."""
    with tempfile.NamedTemporaryFile(suffix=".json") as result:
        cmd = [sys.executable, "-m", "training.benchmarks.scale", "--measure", "train"]
        cmd += ["--engines", engine, "--workers", str(workers), "--threads", str(threads)]
        cmd += ["--data", str(shop), "--result", result.name]
        log.info("shopml train (all four models, %s engine) on %s", engine, shop)
        subprocess.run(cmd, check=True, cwd=ROOT, env=env)
        whole: dict[str, Any] = json.loads(Path(result.name).read_text())
    log.info("shopml train (%s): %s", engine, whole)
    return whole


def merge_rows(previous: dict[str, Any], rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``rows`` plus the rows of a previous payload measured on other shops or engines (each row
    keeps the shop it was measured on; rows of older payloads get the payload's ``shop``)."""
    new = {(r["engine"], r["order_lines"]) for r in rows}
    kept = [
        {**r, "shop": r.get("shop", previous.get("shop"))}
        for r in previous.get("rows", [])
        if (r["engine"], r["order_lines"]) not in new
    ]
    return sorted(kept + rows, key=lambda r: (r["order_lines"], r["engine"] != "pandas"))


def _write_markdown(payload: dict[str, Any], path: Path) -> None:
    cols = ["engine", "order_lines", "customers", "items", "features_s", "train_s", "peak_rss_gb"]
    cols += ["train_all_s", "train_all_peak_rss_gb", "load_avg", "train_all_load_avg"]
    head = ["shop (customers x items)", *cols]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in payload["rows"]:
        shop = row.get("shop") or payload["shop"]
        cells = [f"{shop['customers']:,} x {shop['items']:,}"]
        cells += [_cell(row.get(c, "")) for c in cols]
        lines.append("| " + " | ".join(cells) + " |")
    path.write_text(f"# Scale benchmark ({payload['machine']})\n\n" + "\n".join(lines) + "\n")


def _cell(value: Any) -> str:
    """A table cell: a list (load average before/after) as ``a-b``."""
    return "-".join(str(v) for v in value) if isinstance(value, list) else str(value)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--customers", type=int, default=1_000_000)
    parser.add_argument("--items", type=int, default=50_000)
    parser.add_argument(
        "--workdir", type=Path, default=Path(tempfile.gettempdir()) / "shopml-scale"
    )
    parser.add_argument("--engines", nargs="+", default=["pandas", "dask"])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--partitions", type=int, help="Dask engine: partitions of the orders (default 2/worker)"
    )
    parser.add_argument("--no-train", dest="train", action="store_false")
    parser.add_argument(
        "--full-train",
        action="store_true",
        help="also run the whole shopml train (all four models) and the recommender's serving figures",
    )
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument(
        "--merge", action="store_true", help="keep the rows --out has for other shops/engines"
    )
    parser.add_argument(
        "--measure", choices=["pandas", "dask", "train", "serving"], help=argparse.SUPPRESS
    )
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("distributed").setLevel(logging.WARNING)
    if args.measure:
        if args.measure == "train":
            row = measure_train(args.data, args.threads, args.engines[0], args.workers)
        elif args.measure == "serving":
            row = measure_serving(args.data)
        else:
            row = measure(args.measure, args.data, args.workers, args.train, args.partitions)
        args.result.write_text(json.dumps(row))
        return
    run(
        args.customers,
        args.items,
        workdir=args.workdir,
        engines=tuple(args.engines),
        workers=args.workers,
        partitions=args.partitions,
        train=args.train,
        full_train=args.full_train,
        threads=args.threads,
        out=args.out,
        merge=args.merge,
    )


if __name__ == "__main__":
    main()
