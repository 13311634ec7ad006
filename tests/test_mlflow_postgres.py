"""MLflow with a PostgreSQL backend store: a real ``mlflow server`` on loopback.

A fresh database per test run on the local PostgreSQL (127.0.0.1:5432, user ``postgres``), a real
``mlflow server`` subprocess backed by it with a local artifact folder standing in for object
storage, a training (register + promote) through its REST API, and the service's model lookup
loading the champion packed from it. The server is stopped by its PID and the database dropped.
Skipped with a reason when PostgreSQL does not answer.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import run_with_fresh_bentoml

from features.io import load_dataset
from features.synthetic import ShopConfig, write_shop
from shopml.config import Experiment
from training.tracking import Tracker
from training.train import train

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
PG = "postgres@127.0.0.1:5432"
FAST = {"churn": {"num_boost_round": 40, "n_snapshots": 3}}


def _admin_connect():  # type: ignore[no-untyped-def]
    import psycopg

    return psycopg.connect(f"postgresql://{PG}/postgres", autocommit=True, connect_timeout=3)


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    """A fresh database for this run (dropped afterwards); skips when PostgreSQL is down."""
    try:
        conn = _admin_connect()
    except Exception as exc:  # psycopg.OperationalError and friends
        pytest.skip(f"PostgreSQL not reachable on 127.0.0.1:5432: {exc}")
    name = f"shopml_mlflow_{uuid.uuid4().hex[:10]}"
    with conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        with _admin_connect() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _free_port() -> int:
    from training.benchmarks.serve import free_port

    return free_port()


@pytest.fixture(scope="module")
def mlflow_server(database: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """URL of an ``mlflow server`` backed by ``database``; stopped by PID afterwards."""
    tmp = tmp_path_factory.mktemp("mlflow-pg")
    port = _free_port()
    cmd = [
        str(Path(sys.executable).with_name("mlflow")),
        "server",
        "--backend-store-uri",
        f"postgresql+psycopg://{PG}/{database}",
        "--artifacts-destination",
        str(tmp / "artifacts"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "SHOPML_"))}
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    log_file = (tmp / "server.log").open("w")
    proc = subprocess.Popen(
        cmd, stdout=log_file, stderr=subprocess.STDOUT, env=env, start_new_session=True
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                pytest.fail(f"mlflow server exited: {(tmp / 'server.log').read_text()[-2000:]}")
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"mlflow server not up: {(tmp / 'server.log').read_text()[-2000:]}")
            time.sleep(0.5)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the server and its worker(s): one process group
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log_file.close()


def test_train_register_promote_and_serve_through_postgres(
    mlflow_server: str, database: str, tmp_path: Path
) -> None:
    shop = tmp_path / "shop"
    write_shop(ShopConfig(n_customers=500, n_items=80, seed=11), shop, progress=False)
    exp = Experiment.model_validate({"name": "pg", "data": {"path": str(shop)}, "params": FAST})
    tracker = Tracker(mlflow_server, experiment="pg")
    (first,) = train(exp, tracker, dataset=load_dataset(shop), kinds=("churn",), threads=1)
    assert first.decision.promote and first.decision.reason == "no champion yet"
    champion = tracker.champion("churn")
    assert champion is not None and champion.version == first.version.version
    assert champion.run_id == first.version.run_id

    # the registry and runs really live in PostgreSQL
    import psycopg

    with psycopg.connect(f"postgresql://{PG}/{database}") as conn:
        names = [r[0] for r in conn.execute("SELECT name FROM registered_models")]
        aliases = list(conn.execute("SELECT name, alias, version FROM registered_model_aliases"))
    assert "shopml-churn" in names
    assert ("shopml-churn", "champion", int(champion.version)) in aliases

    # the service loads the champion packed from this server (own BentoML home, in a subprocess)
    script = (
        "import json, sys\n"
        "from shopml.deploy import pack_champions\n"
        "from serving.models import find_models\n"
        "from shopml.artifacts.registry import load_artifact\n"
        "tags = pack_champions(sys.argv[1])\n"
        "src = find_models(('churn', 'value'))\n"
        "loaded = {k: type(load_artifact(s.path)).__name__ for k, s in src.items() if s.path}\n"
        "print(json.dumps({'tags': tags, 'loaded': loaded,\n"
        "                  'labels': src['churn'].labels}))\n"
    )
    out = json.loads(run_with_fresh_bentoml(script, mlflow_server, tmp_path / "bentoml"))
    assert set(out["tags"]) == {"churn", "value"}
    assert out["loaded"] == {"churn": "CustomerTable", "value": "CustomerTable"}
    assert out["labels"]["mlflow_run_id"] == champion.run_id
    assert out["labels"]["mlflow_version"] == champion.version
