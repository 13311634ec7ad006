"""``shopml train --engine dask --scheduler`` against a real, separate Dask cluster.

A ``dask scheduler`` and two ``dask worker`` processes are started on 127.0.0.1 (ports chosen by
the scheduler, its address read from a scheduler file), the CLI trains the churn model (with
the customer-value model) and the demand model on a tiny demo shop through ``lightgbm.dask`` on
that cluster, and the MLflow store must hold the registered versions with ``fit =
lightgbm.dask``. The processes are stopped by their PIDs when the module's tests end.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from features.synthetic import ShopConfig, write_shop

pytestmark = pytest.mark.integration

BIN = Path(sys.executable).parent
WORKERS = 2
START_TIMEOUT_S = 60.0


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_for_file(path: Path, procs: list[subprocess.Popen[bytes]]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while not path.exists() or not path.read_text().strip():
        if any(p.poll() is not None for p in procs) or time.monotonic() > deadline:
            raise RuntimeError(f"the Dask scheduler did not start (no {path})")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def scheduler(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The address of a running ``dask scheduler`` with two ``dask worker`` processes."""
    from distributed import Client

    tmp = tmp_path_factory.mktemp("cluster")
    info = tmp / "scheduler.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OMP_WAIT_POLICY": "PASSIVE"}
    dask = str(BIN / "dask")
    procs: list[subprocess.Popen[bytes]] = []
    log = (tmp / "cluster.log").open("wb")
    try:
        common = {"stdout": log, "stderr": subprocess.STDOUT, "env": env}
        where = ["--host", "127.0.0.1", "--dashboard-address", "127.0.0.1:0"]
        cmd = [dask, "scheduler", "--port", "0", "--scheduler-file", str(info), *where]
        procs.append(subprocess.Popen(cmd, **common))  # type: ignore[call-overload]
        _wait_for_file(info, procs)
        address = str(json.loads(info.read_text())["address"])
        for i in range(WORKERS):
            cmd = [dask, "worker", address, "--nthreads", "1", "--name", f"w{i}", *where]
            cmd += ["--local-directory", str(tmp / f"w{i}"), "--memory-limit", "2GiB"]
            procs.append(subprocess.Popen(cmd, **common))  # type: ignore[call-overload]
        with Client(address, timeout=START_TIMEOUT_S) as client:
            client.wait_for_workers(WORKERS, timeout=START_TIMEOUT_S)
        yield address
    finally:
        _stop(procs[::-1])  # workers first, then the scheduler
        log.close()


def test_train_registers_models_trained_on_a_separate_cluster(
    scheduler: str, tmp_path: Path
) -> None:
    import mlflow

    shop = tmp_path / "shop"
    write_shop(ShopConfig(n_customers=600, n_items=60, seed=5), shop, progress=False)
    experiment = tmp_path / "exp.yaml"
    fast = {
        "churn": {"n_snapshots": 3, "num_boost_round": 30, "cv_folds": 2},
        "demand": {"num_rounds": 30, "models": ["lgb_raw"]},
    }
    config = {"name": "dask-cluster", "data": {"path": str(shop)}, "params": fast}
    experiment.write_text(json.dumps(config))  # JSON is YAML
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    cmd = [str(BIN / "shopml"), "train", "-e", str(experiment), "-k", "churn", "-k", "demand"]
    cmd += ["--engine", "dask", "--scheduler", scheduler, "--tracking-uri", uri, "--threads", "1"]
    env = {**os.environ, "SHOPML_ARTIFACT_ROOT": (tmp_path / "artifacts").as_uri()}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    print(done.stdout[-1500:])

    client = mlflow.MlflowClient(tracking_uri=uri)
    registered = {m.name for m in client.search_registered_models()}
    assert {"shopml-churn", "shopml-demand"} <= registered, registered
    exp = client.get_experiment_by_name("dask-cluster")
    assert exp is not None
    runs = client.search_runs(
        [exp.experiment_id],
        filter_string="params.fit = 'lightgbm.dask'",
    )
    assert {r.data.params["kind"] for r in runs} == {"churn", "demand"}
