"""Benchmark protocols of ``../shared/BENCHMARKS.md`` and the writer of their result files."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from features.memory import peak_rss_gb as peak_rss_gb  # re-exported for the benchmarks

RESULTS_DIR = Path("experiments/results")
#: The real data sets of ../shared/data (not part of the repository).
SHARED_DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data"
DATA_PATHS = {
    "online-retail": SHARED_DATA / "online_retail" / "online_retail.parquet",
    "cdnow": SHARED_DATA / "cdnow" / "cdnow_master.parquet",
}


def git_commit() -> str:
    """The current commit's short sha, or ``unknown`` outside a git checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        )
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """Rows as a Markdown table; columns in first-seen order, floats to 4 significant digits."""
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]

    def fmt(v: Any) -> str:
        if v is None:
            return ""
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def next_test_look(
    dataset: str, protocol: str, note: str | None, results_dir: Path = RESULTS_DIR
) -> dict[str, Any]:
    """``test_looks`` and ``note`` for a run that reads the test labels: one more look than the
    results file already records (every such run counts, kept or not)."""
    path = results_dir / f"{dataset}-{protocol}.json"
    previous = int(json.loads(path.read_text()).get("test_looks", 0)) if path.exists() else 0
    return {
        "test_looks": previous + 1,
        "note": note or "no note given (--note says what changed since the last look)",
    }


def write_results(
    dataset: str,
    protocol: str,
    rows: list[dict[str, Any]],
    *,
    as_of: str | None = None,
    results_dir: Path = RESULTS_DIR,
    stem: str | None = None,
    **extra: Any,
) -> Path:
    """Write ``<dataset>-<protocol>.json`` (or ``<stem>.json``) and ``.md`` as in BENCHMARKS.md."""
    results_dir.mkdir(parents=True, exist_ok=True)
    payload = {
        "dataset": dataset,
        "protocol": protocol,
        "as_of": as_of,
        "commit": git_commit(),
        **extra,
        "rows": rows,
    }
    path = results_dir / f"{stem or f'{dataset}-{protocol}'}.json"
    path.write_text(json.dumps(payload, indent=2, default=float) + "\n")
    title = f"# {dataset} protocol {protocol} (as_of {as_of}, commit {payload['commit']})\n\n"
    path.with_suffix(".md").write_text(title + markdown_table(rows))
    return path
