"""The scale benchmark's result file: merging rows of several shops."""

from __future__ import annotations

from training.benchmarks.scale import merge_rows


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
