"""Faults survived: bad model versions, a lost tracking store, concurrent trainings, a killed
worker, and secrets that must never leak.

MLflow tests use a temporary SQLite store and artifact folder; the BentoML ones a temporary
``BENTOML_HOME`` in a subprocess (this process's BentoML configuration is untouched) or a real
``bentoml serve`` on a free loopback port, stopped by its PID.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
SECRET_PW = "s3cretPW-7f3a"
SECRET_KEY = "sk-live-9c1d7e-SECRET"


# ---------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def demo_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from training.benchmarks.serve import build_demo_models

    folder = tmp_path_factory.mktemp("fault-models")
    build_demo_models(folder, n_customers=300, n_items=60, fast=True)
    return folder


@pytest.fixture()
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A Tracker on a fresh SQLite store whose artifacts live under ``tmp_path``."""
    from training.tracking import Tracker

    monkeypatch.setenv("SHOPML_ARTIFACT_ROOT", (tmp_path / "artifacts").as_uri())
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    yield Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", experiment="faults")


def log_churn(tracker: Any, folder: Path, value: float = 0.8) -> Any:
    ids = pd.read_parquet(folder / "scores.parquet")["customer_id"].astype(str)[:3]
    with tracker.run("churn"):  # inside a run of the store's experiment, as train() does
        return tracker.log_model(
            "churn",
            folder,
            pd.DataFrame({"customer_id": ids.tolist()}),
            gate_metric="roc_auc",
            gate_value=value,
            higher_is_better=True,
            backtest_key="k",
            params={},
            as_of="2024-06-01",
        )


def artifact_dir(tracker: Any, info: Any) -> Path:
    """Local folder of a registered version's logged model."""
    import mlflow

    source = tracker.client.get_model_version("shopml-churn", info.version).source
    model = mlflow.get_logged_model(source.rsplit("/", 1)[-1])
    return Path(model.artifact_location.removeprefix("file://"))


def store_root(tracker: Any) -> Path:
    return Path(tracker.uri.removeprefix("sqlite:///")).parent


def versions(tracker: Any, name: str = "shopml-churn") -> list[int]:
    return sorted(int(v.version) for v in tracker.client.search_model_versions(f"name='{name}'"))


# ---------------------------------------------------------------- bad model versions
@pytest.mark.integration
@pytest.mark.parametrize("damage", ["missing", "corrupted_meta", "truncated_table"])
def test_promotion_refuses_a_version_whose_artifact_cannot_be_loaded(
    store: Any, demo_models: Path, damage: str
) -> None:
    from training.tracking import PromotionRefused

    good = log_churn(store, demo_models / "churn")
    store.set_champion(good)
    bad = log_churn(store, demo_models / "churn", value=0.9)
    folder = artifact_dir(store, bad) / "artifacts" / "churn"
    assert str(folder).startswith(str(store_root(store)))
    assert (folder / "meta.json").is_file()
    if damage == "missing":
        shutil.rmtree(folder)
    elif damage == "corrupted_meta":
        (folder / "meta.json").write_text("{not json")
    else:
        table = folder / "scores.parquet"
        table.write_bytes(table.read_bytes()[:100])
    with pytest.raises(PromotionRefused, match="cannot be loaded"):
        store.set_champion(bad)
    champion = store.champion("churn")
    assert champion is not None and champion.version == good.version
    store.verify_loadable(champion)


@pytest.fixture(scope="module")
def small_shop(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from features.io import load_dataset
    from features.synthetic import ShopConfig, write_shop

    shop = tmp_path_factory.mktemp("shop") / "shop"
    config = ShopConfig(
        n_customers=300, n_items=40, seed=5, start=date(2023, 1, 1), end=date(2024, 7, 1)
    )
    write_shop(config, shop, progress=False)
    return load_dataset(shop)


@pytest.mark.integration
def test_training_tags_a_refused_promotion_and_keeps_the_champion(
    store: Any, small_shop: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """train(): a gate-approved version that cannot be loaded back is tagged, not promoted."""
    from shopml.config import DataConfig, Experiment
    from training import train as train_mod
    from training.tracking import Decision, PromotionRefused

    exp = Experiment.model_validate({"name": "faults", "data": DataConfig(path="shop")})
    (first,) = train_mod.train(exp, store, dataset=small_shop, kinds=("churn",), threads=1)
    assert first.decision.promote

    def refuse(info: Any) -> None:
        raise PromotionRefused(f"models:/shopml-churn/{info.version} cannot be loaded (test)")

    monkeypatch.setattr(store, "verify_loadable", refuse)
    monkeypatch.setattr(train_mod, "decide", lambda *a, **k: Decision(True, "gate says yes"))
    (second,) = train_mod.train(exp, store, dataset=small_shop, kinds=("churn",), threads=1)
    assert not second.decision.promote and "cannot be loaded" in second.decision.reason
    assert store.champion("churn").version == first.version.version
    tags = store.client.get_model_version("shopml-churn", second.version.version).tags
    assert tags["gate_decision"].startswith("refused:")


STORE_SCRIPT = """
import sys
from pathlib import Path
from serving.models import store_model
store_model("churn", Path(sys.argv[1]), {"alias": "champion"}, {})
store_model("churn", Path(sys.argv[2]), {"alias": "broken"}, {})
from serving.auth import READINESS
from serving.service import Shopml
svc = Shopml()
import asyncio
from serving.schemas import CustomerScoresRequest
out = asyncio.run(svc.customer_scores(CustomerScoresRequest(customer_ids=[sys.argv[3]])))
print("RESULT " + __import__("json").dumps({
    "readiness": READINESS.body(),
    "tag": svc.sources["churn"].tag,
    "scored": [c.customer_id for c in out.customers],
}))
"""


@pytest.mark.integration
def test_service_keeps_serving_the_previous_model_when_the_newest_is_broken(
    demo_models: Path, tmp_path: Path
) -> None:
    broken = tmp_path / "broken-churn"
    shutil.copytree(demo_models / "churn", broken)
    (broken / "scores.parquet").write_bytes(b"PAR1 not parquet")
    customer = str(pd.read_parquet(demo_models / "churn" / "scores.parquet")["customer_id"][0])
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOPML_")}
    env.update(BENTOML_HOME=str(tmp_path / "bentoml"), BENTOML_DO_NOT_TRACK="true")
    out = subprocess.run(
        [sys.executable, "-c", STORE_SCRIPT, str(demo_models / "churn"), str(broken), customer],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    line = next(x for x in out.stdout.splitlines() if x.startswith("RESULT "))
    result = json.loads(line.removeprefix("RESULT "))
    readiness = result["readiness"]
    assert "churn" in readiness["models"], readiness
    assert "failed to load" in readiness["fallbacks"]["churn"]
    assert "serving the older" in readiness["fallbacks"]["churn"]
    assert result["scored"] == [customer]
    assert result["tag"] == readiness["models"]["churn"]


# ---------------------------------------------------------------- tracking store faults
def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_unreachable_tracking_store_is_a_clear_error_without_the_password(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import mlflow.store.db.utils as db_utils

    from training.tracking import Tracker, TrackingStoreError

    monkeypatch.setattr(db_utils, "MAX_RETRY_COUNT", 1)  # MLflow retries ~100 s by default
    uri = f"postgresql://shop:{SECRET_PW}@127.0.0.1:{closed_port()}/mlflow"
    caplog.set_level(logging.DEBUG)
    with pytest.raises(TrackingStoreError) as err:
        Tracker(uri, experiment="faults")
    message = str(err.value)
    assert "cannot use the MLflow tracking store" in message and "shop:***@127.0.0.1" in message
    assert SECRET_PW not in message and SECRET_PW not in caplog.text
    assert err.value.__cause__ is None  # the raw driver error (with the URL) is not chained


def test_packing_warns_about_a_missing_champion_without_the_password(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """``shopml serve``'s packing names the store in its warning, with the password masked."""
    import training.tracking as tracking
    from shopml.deploy import pack_champions

    class StoreWithoutChampions:
        def __init__(self, uri: str | None) -> None:
            self.uri = uri

        def champion(self, kind: str) -> None:
            return None

    monkeypatch.setattr(tracking, "Tracker", StoreWithoutChampions)
    caplog.set_level(logging.DEBUG)
    assert pack_champions(f"postgresql://shop:{SECRET_PW}@db.internal:5432/mlflow") == {}
    assert "no champion in postgresql://shop:***@db.internal:5432/mlflow" in caplog.text
    assert SECRET_PW not in caplog.text


def test_unwritable_sqlite_store_is_a_clear_error(tmp_path: Path) -> None:
    from training.tracking import Tracker, TrackingStoreError

    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the store's folder should be")
    with pytest.raises(TrackingStoreError, match="cannot use the MLflow tracking store"):
        Tracker(f"sqlite:///{blocker / 'mlflow.db'}", experiment="faults")


@pytest.mark.integration
@pytest.mark.parametrize("fault", ["artifact_folder_unwritable", "disk_full"])
def test_failed_model_logging_registers_nothing_and_keeps_the_champion(
    store: Any, demo_models: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, fault: str
) -> None:
    from training.tracking import TrackingStoreError

    good = log_churn(store, demo_models / "churn")
    store.set_champion(good)
    before = versions(store)
    if fault == "artifact_folder_unwritable":
        root = tmp_path / "artifacts"
        shutil.move(root, tmp_path / "artifacts.moved")
        root.write_text("not a folder")  # root cannot write into it either
    else:
        real = type(store)._log_pyfunc

        def full(folder: Path, example: pd.DataFrame, signature: Any) -> Any:
            (tmp_path / "partial").write_bytes(b"x" * 10)
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(type(store), "_log_pyfunc", staticmethod(full))
        assert real is not None
    with pytest.raises(TrackingStoreError, match="no model version was registered"):
        log_churn(store, demo_models / "churn", value=0.99)
    assert versions(store) == before
    champion = store.champion("churn")
    assert champion is not None and champion.version == good.version


# ---------------------------------------------------------------- concurrent trainings
TRAIN_SCRIPT = """
import sys, time
from pathlib import Path
import pandas as pd
from training.tracking import Tracker, decide
tracker = Tracker(sys.argv[1], experiment="faults")
folder = Path(sys.argv[2])
ids = pd.read_parquet(folder / "scores.parquet")["customer_id"].astype(str)[:3].tolist()
for n in range(int(sys.argv[3])):
  with tracker.run(f"churn {n}"):
    info = tracker.log_model("churn", folder, pd.DataFrame({"customer_id": ids}),
        gate_metric="roc_auc", gate_value=0.5 + 0.01 * n, higher_is_better=True,
        backtest_key="k", params={}, as_of="2024-06-01")
  if decide(info.gate_value, tracker.champion("churn"), backtest_key="k",
              higher_is_better=True).promote:
    tracker.set_champion(info)
print("DONE", flush=True)
"""


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.parametrize("fresh_store", [False, True], ids=["existing-store", "fresh-store"])
def test_two_trainings_at_once_leave_a_consistent_registry(
    demo_models: Path, tmp_path: Path, fresh_store: bool
) -> None:
    from training.tracking import Tracker

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, "SHOPML_ARTIFACT_ROOT": (tmp_path / "artifacts").as_uri()}
    if not fresh_store:
        subprocess.run(
            [sys.executable, "-c", TRAIN_SCRIPT, uri, str(demo_models / "churn"), "1"],
            cwd=ROOT, env=env, check=True, capture_output=True, timeout=180,
        )  # fmt: skip
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", TRAIN_SCRIPT, uri, str(demo_models / "churn"), "3"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outcomes = []
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        outcomes.append((proc.returncode, out, err))
    for code, out, err in outcomes:
        # both complete, or one fails with an error message (never a hang or a corrupt store)
        assert (code == 0 and "DONE" in out) or (code != 0 and err.strip()), err[-2000:]
    assert any(code == 0 for code, _, _ in outcomes), [e[-1500:] for _, _, e in outcomes]
    os.environ["SHOPML_ARTIFACT_ROOT"] = env["SHOPML_ARTIFACT_ROOT"]
    try:
        tracker = Tracker(uri, experiment="faults")
    finally:
        os.environ.pop("SHOPML_ARTIFACT_ROOT", None)
    numbers = versions(tracker)
    assert numbers == list(range(1, len(numbers) + 1)), numbers  # no gaps, no duplicates
    done = sum(3 for code, _, _ in outcomes if code == 0) + (0 if fresh_store else 1)
    assert len(numbers) >= done
    champion = tracker.champion("churn")
    assert champion is not None
    tracker.verify_loadable(champion)


# ---------------------------------------------------------------- killed worker
def _children(pid: int) -> list[Any]:
    import psutil

    return psutil.Process(pid).children(recursive=True)


def _worker_pids(pid: int) -> list[int]:
    """Live worker processes of a ``bentoml serve`` (zombies of killed ones are skipped)."""
    import psutil

    out = []
    for p in _children(pid):
        try:
            if p.status() != psutil.STATUS_ZOMBIE and "worker" in " ".join(p.cmdline()):
                out.append(p.pid)
        except psutil.Error:
            continue
    return out


@pytest.mark.integration
@pytest.mark.slow
def test_killed_worker_is_replaced_and_requests_fail_cleanly(
    demo_models: Path, tmp_path: Path
) -> None:
    import httpx

    from training.benchmarks.serve import free_port, server_env, start_server, stop_server

    env = server_env(demo_models, workers=2)
    port = free_port()
    proc = start_server(port, env, ROOT, tmp_path / "server.log", timeout_s=180)
    url = f"http://127.0.0.1:{port}"
    results: list[str] = []
    stop = threading.Event()

    def client() -> None:
        with httpx.Client(base_url=url, timeout=10) as http:
            while not stop.is_set():
                try:
                    r = http.post("/v1/recommend", json={"user_id": "u1", "k": 5})
                    results.append(str(r.status_code))
                    if r.status_code >= 500:
                        r.json()  # a 5xx must still be a clean JSON error
                except httpx.TransportError as exc:  # connection reset / refused: clean
                    results.append(type(exc).__name__)

    try:
        workers = _worker_pids(proc.pid)
        assert len(workers) == 2, [p.cmdline() for p in _children(proc.pid)]
        threads = [threading.Thread(target=client) for _ in range(4)]
        for t in threads:
            t.start()
        time.sleep(3)
        os.kill(workers[0], signal.SIGKILL)
        killed_at = len(results)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            now = _worker_pids(proc.pid)
            if len(now) == 2 and workers[0] not in now:
                break
            time.sleep(0.5)
        replaced = _worker_pids(proc.pid)
        time.sleep(15)  # the replacement loads its models and takes traffic
        stop.set()
        for t in threads:
            t.join(timeout=30)
        assert proc.poll() is None, "the server died with its worker"
        assert len(replaced) == 2 and workers[0] not in replaced, replaced
        tail = results[-50:]
        assert tail and all(r == "200" for r in tail), tail
        bad = [r for r in results if r != "200"]
        assert all(r in ("503", "ReadError", "RemoteProtocolError", "ConnectError") for r in bad)
        assert len(bad) <= 50, (len(bad), killed_at, len(results))
        assert httpx.get(f"{url}/readyz", timeout=5).status_code == 200
        print("killed-worker outcomes:", dict(Counter(results)))  # figures for RELIABILITY.md
    finally:
        stop.set()
        stop_server(proc)
    assert proc.poll() is not None


# ---------------------------------------------------------------- secrets
def test_api_keys_never_reach_logs_or_responses(
    demo_models: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from starlette.testclient import TestClient

    from serving.auth import KeyConfigError, KeyRing

    asgi_app = importlib.import_module("test_service").asgi_app

    monkeypatch.setenv("SHOPML_MODEL_DIR", str(demo_models))
    monkeypatch.setenv("SHOPML_BIND_HOST", "127.0.0.1")
    monkeypatch.setenv("SHOPML_API_KEYS", f"{SECRET_KEY}:marketing,other-key:storefront")
    monkeypatch.delenv("SHOPML_API_KEYS_FILE", raising=False)
    caplog.set_level(logging.DEBUG)
    bodies = []
    with TestClient(asgi_app(), base_url="http://127.0.0.1") as client:
        for headers in (
            {"X-API-Key": SECRET_KEY},
            {"Authorization": f"Bearer {SECRET_KEY}"},
            {"X-API-Key": SECRET_KEY + "x"},
            {"Authorization": f"Bearer {SECRET_KEY[:-1]}"},
        ):
            for path, body in (
                ("/v1/customer_scores", {"customer_ids": ["a"]}),
                ("/v1/recommend", {"user_id": SECRET_KEY[:5]}),
                ("/v1/forecast", {"item_ids": ["a"]}),
                ("/v1/models", {}),
            ):
                r = client.post(path, json=body, headers=headers)
                assert r.status_code < 500
                bodies.append(r.text)
        bodies += [client.get(p).text for p in ("/readyz", "/docs.json", "/healthz")]
    assert not any(SECRET_KEY in b for b in bodies)
    assert SECRET_KEY not in caplog.text
    for bad in (f"{SECRET_KEY}:nope", f"{SECRET_KEY}", f"{SECRET_KEY}:"):
        with pytest.raises(KeyConfigError) as err:
            KeyRing.parse(bad)
        assert SECRET_KEY not in str(err.value)


@pytest.mark.integration
def test_database_passwords_never_reach_mlflow_params_tags_or_logs(
    small_shop: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A training whose data comes from a SQL URL with a password (dataset preloaded)."""
    import mlflow

    from shopml.config import DataConfig, Experiment
    from training.tracking import Tracker
    from training.train import train

    monkeypatch.setenv("SHOPML_ARTIFACT_ROOT", (tmp_path / "artifacts").as_uri())
    caplog.set_level(logging.DEBUG)
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", experiment="secrets")
    url = f"postgresql+psycopg://shop:{SECRET_PW}@db.internal:5432/shop"
    exp = Experiment.model_validate({"name": "secrets", "data": DataConfig(path=url)})
    (result,) = train(exp, tracker, dataset=small_shop, kinds=("churn",), threads=1)
    runs = mlflow.search_runs(experiment_ids=[tracker.experiment_id], output_format="list")
    seen = [caplog.text]
    for run in runs:
        seen += [json.dumps(run.data.params), json.dumps(run.data.tags)]
        local = Path(
            mlflow.artifacts.download_artifacts(
                run_id=run.info.run_id, dst_path=str(tmp_path / run.info.run_id)
            )
        )
        seen += [p.read_text(errors="replace") for p in local.rglob("*.json")]
    seen.append(
        json.dumps(tracker.client.get_model_version("shopml-churn", result.version.version).tags)
    )
    assert not [s for s in seen if SECRET_PW in s]
    assert any("shop:***@db.internal" in s for s in seen)  # the redacted source is kept
