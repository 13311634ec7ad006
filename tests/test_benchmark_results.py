"""Result files of the quality benchmarks: every run that reads test labels is counted."""

from __future__ import annotations

import json
from pathlib import Path

from training.benchmarks import next_test_look, write_results


def test_every_run_is_one_more_look_with_its_note(tmp_path: Path) -> None:
    first = next_test_look("shop", "C", None, results_dir=tmp_path)
    assert first["test_looks"] == 1 and "no note given" in first["note"]
    write_results("shop", "C", [{"model": "shopml"}], results_dir=tmp_path, **first)
    second = next_test_look("shop", "C", "ranker features", results_dir=tmp_path)
    assert second == {"test_looks": 2, "note": "ranker features"}
    write_results("shop", "C", [{"model": "shopml"}], results_dir=tmp_path, **second)
    saved = json.loads((tmp_path / "shop-C.json").read_text())
    assert saved["test_looks"] == 2 and saved["note"] == "ranker features"
    assert next_test_look("shop", "R", None, results_dir=tmp_path)["test_looks"] == 1
