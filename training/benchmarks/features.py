"""Feature-build throughput: order lines per second end to end, and peak memory.

``shopml bench features`` generates a synthetic shop (once per size), then measures in a fresh
process: read + validate, and every feature pipeline, so peak RSS is the feature build's own.
End to end = reading the Parquet files, validating them and building every feature (users, items,
interactions, weekly demand), on ``$SHOPML_THREADS`` threads (default min(2, cores)). The machine
is shared: the row records the process's CPU seconds and the load average around the run beside
the wall-clock seconds.
Writes ``experiments/results/features.json``.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from training.benchmarks import peak_rss_gb, write_results

log = logging.getLogger(__name__)

TARGET = "order lines/s >= 1,000,000; peak RSS <= 3x the orders table in memory"


def measure(folder: Path) -> dict[str, Any]:
    """Load, validate and build every feature of the shop in ``folder``; time each step."""
    from features.io import load_dataset
    from features.pipeline import build_feature_set
    from features.threads import feature_threads

    load_before = os.getloadavg()[0]
    cpu_start = time.process_time()
    start = time.perf_counter()
    dataset = load_dataset(folder)
    load_s = time.perf_counter() - start
    orders_gb = dataset.orders.memory_usage(deep=True).sum() / 1e9
    start = time.perf_counter()
    fs = build_feature_set(dataset)
    features_s = time.perf_counter() - start
    lines = len(dataset.orders)
    cpu_s = time.process_time() - cpu_start  # every thread of this process
    peak_gb = peak_rss_gb()
    total = load_s + features_s
    return {
        "order_lines": lines,
        "customers": len(fs.users),
        "items": len(fs.items),
        "load_validate_s": round(load_s, 2),
        "features_s": round(features_s, 2),
        "total_s": round(total, 2),
        "rows_per_s": round(lines / total),
        "features_rows_per_s": round(lines / features_s),
        "orders_in_memory_gb": round(orders_gb, 3),
        "peak_rss_gb": round(peak_gb, 3),
        "peak_rss_over_orders": round(peak_gb / orders_gb, 2),
        "cpu_s": round(cpu_s, 2),
        "threads": feature_threads(),  # $SHOPML_THREADS, else min(2, cores)
        "load_avg_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "steps_s": fs.timings_s,
    }


def run(lines: int, workdir: Path) -> dict[str, Any]:
    """Generate a shop with about ``lines`` order lines (if not there yet) and measure it."""
    from features.synthetic import ShopConfig, write_shop
    from features.threads import feature_threads

    feature_threads()  # a bad $SHOPML_THREADS stops here, not inside the measuring process

    shop = workdir / f"shop-{lines}-v2"  # v2: order ids stored as plain strings
    if not (shop / "orders.parquet").exists():
        base = ShopConfig()
        per_customer = _lines_per_customer(base)
        config = ShopConfig(
            n_customers=max(100, int(lines / per_customer)),
            n_items=max(200, int(lines / 1000)),
        )
        log.info("generating a synthetic shop with ~%s order lines in %s", f"{lines:,}", shop)
        write_shop(config, shop)
    out = subprocess.run(
        [sys.executable, "-m", "training.benchmarks.features", str(shop)],
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        raise RuntimeError(f"the feature-build measurement failed:\n{out.stderr.strip()}")
    row = {"name": "feature-build", **json.loads(out.stdout.strip().splitlines()[-1])}
    write_results("synthetic", "features", [row], stem="features", target=TARGET)
    for key, value in row.items():
        log.info("%-22s %s", key, value)
    return row


def _lines_per_customer(config: Any) -> float:
    """Average order lines per customer of a config's shop, from a small sample shop."""
    from dataclasses import replace

    from features.synthetic import generate

    sample = replace(config, n_customers=2000)
    return max(1.0, sum(len(chunk) for chunk in generate(sample)) / 2000)


if __name__ == "__main__":
    print(json.dumps(measure(Path(sys.argv[1]))))
