"""Shared fixtures: paths to the real data sets (skipped with a reason when absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
ONLINE_RETAIL = SHARED_DATA / "online_retail" / "online_retail.parquet"
CDNOW_MASTER = SHARED_DATA / "cdnow" / "cdnow_master.parquet"


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real data not available: {path} is absent (it lives in ../shared/data)")
    return path


@pytest.fixture(scope="session")
def online_retail_path() -> Path:
    """Path to UCI Online Retail; skips the test when ../shared/data is absent."""
    return _need(ONLINE_RETAIL)


@pytest.fixture(scope="session")
def cdnow_path() -> Path:
    """Path to the CDNOW master file; skips the test when ../shared/data is absent."""
    return _need(CDNOW_MASTER)


@pytest.fixture(scope="session")
def online_retail(online_retail_path: Path):  # type: ignore[no-untyped-def]
    """The validated Online Retail dataset (loaded once per test session)."""
    from features.io import load_dataset

    return load_dataset(online_retail_path)


def run_with_fresh_bentoml(script: str, tracking_uri: str, bentoml_home: Path) -> str:
    """Run ``script`` (``sys.argv[1]`` = ``tracking_uri``) in a subprocess with its own BentoML
    home and no MLflow/shopml environment; its last stdout line (fails on a non-zero exit)."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "SHOPML_"))}
    env.update(BENTOML_HOME=str(bentoml_home), BENTOML_DO_NOT_TRACK="true")
    done = subprocess.run(
        [sys.executable, "-c", script, tracking_uri],
        cwd=Path(__file__).parents[1],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()[-1]
