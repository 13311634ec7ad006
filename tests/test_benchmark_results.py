"""Result files of the quality benchmarks (every run that reads test labels is counted) and the
peak-memory reading of the speed benchmarks."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from training.benchmarks import next_test_look, peak_rss_gb, write_results


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


def test_a_measuring_child_reports_its_own_peak_not_its_parents() -> None:
    """The feature benchmark measures in a child process. A parent that peaked at 0.4 GB before
    starting it (as when it generated the shop first) must not raise the child's peak: Linux
    carries ``ru_maxrss`` over ``execve``, which once reported 3.84x instead of 2.9x."""
    parent = (
        "import subprocess, sys\n"
        "block = bytearray(400_000_000)\n"
        "block[::4096] = b'x' * len(block[::4096])\n"
        "del block\n"
        "child = 'from training.benchmarks import peak_rss_gb; print(peak_rss_gb())'\n"
        "print(subprocess.run([sys.executable, '-c', child], capture_output=True, text=True,"
        " check=True).stdout)\n"
    )
    out = subprocess.run([sys.executable, "-c", parent], capture_output=True, text=True, check=True)
    child_peak = float(out.stdout.strip())
    assert 0.005 < child_peak < 0.2, child_peak
    assert peak_rss_gb() > 0.005
