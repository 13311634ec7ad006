"""The scale benchmark's result file: merging rows of several shops."""

from __future__ import annotations

from pathlib import Path

from features.io import load_dataset
from features.pipeline import default_as_of
from features.synthetic import ShopConfig, write_shop
from training.benchmarks.scale import measure_serving, merge_rows
from training.recommender import RecommenderModel


def test_merge_keeps_other_shops_and_replaces_the_same_shop_and_engine() -> None:
    small = {"customers": 200, "items": 10}
    previous = {
        "shop": small,
        "rows": [
            {"engine": "pandas", "order_lines": 5, "features_s": 1.0},
            {"engine": "dask", "order_lines": 5, "features_s": 3.0},
        ],
    }
    big = {"customers": 1000, "items": 50}
    new = [{"engine": "pandas", "order_lines": 29, "features_s": 9.0, "shop": big}]
    merged = merge_rows(previous, new)
    assert [(r["engine"], r["order_lines"]) for r in merged] == [
        ("pandas", 5), ("dask", 5), ("pandas", 29),
    ]  # fmt: skip
    assert merged[0]["shop"] == small and merged[2]["shop"] == big
    again = merge_rows({"shop": big, "rows": merged}, [{**new[0], "features_s": 8.0}])
    assert [r["features_s"] for r in again] == [1.0, 3.0, 8.0]


def test_serving_figures_time_every_user_or_a_fixed_sample(tmp_path: Path) -> None:
    write_shop(ShopConfig(n_customers=300, n_items=30, seed=1), tmp_path / "shop", progress=False)
    ds = load_dataset(tmp_path / "shop")
    as_of = default_as_of(ds.orders)
    model = RecommenderModel(factors=8, iterations=3, num_threads=1)
    model.fit(ds.orders, as_of, items=ds.items, customers=ds.customers).save(tmp_path / "rec")
    whole = measure_serving(tmp_path / "rec")
    assert whole["batch_users_measured"] == whole["users"] > 10
    assert "batch_recommend_all_users_s" in whole and "batch_all_users_est_s" not in whole
    sampled = measure_serving(tmp_path / "rec", batch_users=10)
    assert sampled["batch_users_measured"] == 10 and sampled["users"] == whole["users"]
    assert "batch_all_users_est_s" in sampled and "batch_recommend_all_users_s" not in sampled
    assert sampled["artifact_mb"] > 0 and sampled["load_s"] >= 0
