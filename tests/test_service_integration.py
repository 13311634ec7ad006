"""A real ``bentoml serve`` subprocess on a free loopback port, models from a BentoML store.

The tiny models are put into a temporary ``BENTOML_HOME`` with :func:`serving.models.store_model`
(in a subprocess, so this process's BentoML configuration is untouched); the server resolves
``shopml-<kind>:latest`` from that store exactly as in production, answers each endpoint over
HTTP, and is stopped by its PID.
"""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
KINDS = ("recommender", "churn", "repurchase", "value", "demand")
#: The server's cap on requests in progress: small, so that a burst of BURST exceeds it.
MAX_CONCURRENCY = 4
BURST = 48


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    """(base URL, a customer id and an item id) of a started server."""
    import pandas as pd

    from training.benchmarks.serve import build_demo_models, free_port, start_server, stop_server

    tmp = tmp_path_factory.mktemp("serve")
    models = tmp / "models"
    build_demo_models(models, n_customers=300, n_items=60, fast=True)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("SHOPML_") and k not in ("BENTOML_HOST", "BENTOML_PORT")
    }
    env.update(
        BENTOML_HOME=str(tmp / "bentoml"),
        BENTOML_DO_NOT_TRACK="true",
        SHOPML_BIND_HOST="127.0.0.1",
        SHOPML_WORKERS="1",
        SHOPML_MAX_CONCURRENCY=str(MAX_CONCURRENCY),
        SHOPML_API_KEYS="int-sf:storefront,int-mk:marketing,int-pl:planning",
    )
    store = "; ".join(
        f"store_model({k!r}, Path({str(models / k)!r}), {{'alias': 'champion'}}, {{}})"
        for k in KINDS
    )
    subprocess.run(
        [
            sys.executable,
            "-c",
            f"from pathlib import Path; from serving.models import store_model; {store}",
        ],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
    )
    port = free_port()
    proc = start_server(port, env, ROOT, tmp / "server.log", timeout_s=120)
    try:
        ids = {
            "customer": str(pd.read_parquet(models / "churn" / "scores.parquet")["customer_id"][0]),
            "item": str(pd.read_parquet(models / "demand" / "items.parquet")["item_id"][0]),
        }
        yield f"http://127.0.0.1:{port}", ids
    finally:
        stop_server(proc)
        assert proc.poll() is not None


def test_every_endpoint_over_http(server: tuple[str, dict[str, str]]) -> None:
    url, ids = server
    sf, mk, pl = ({"X-API-Key": k} for k in ("int-sf", "int-mk", "int-pl"))
    with httpx.Client(base_url=url, timeout=10) as http:
        ready = http.get("/readyz")
        assert ready.status_code == 200 and ready.json()["missing"] == {}
        assert set(ready.json()["models"]) == set(KINDS)

        r = http.post("/v1/recommend", json={"user_id": ids["customer"], "k": 5}, headers=sf)
        assert r.status_code == 200 and len(r.json()["items"]) == 5
        assert r.json()["model_version"].startswith("shopml-recommender:")
        r = http.post("/v1/recommend", json={"user_id": "nobody"}, headers=sf)
        assert r.status_code == 200 and r.json()["strategy"] == "popular"
        r = http.post("/v1/similar_items", json={"item_id": ids["item"], "k": 3}, headers=sf)
        assert r.status_code == 200
        r = http.post("/v1/similar_items", json={"item_id": "no-such"}, headers=sf)
        assert r.status_code == 404 and r.json()["field"] == "item_id"

        r = http.post("/v1/churn_risk", json={"limit": 10}, headers=mk)
        assert r.status_code == 200 and len(r.json()["rows"]) == 10 and r.json()["next_cursor"]
        body = {"customer_ids": [ids["customer"], "ghost"]}
        r = http.post("/v1/customer_scores", json=body, headers=mk)
        assert r.status_code == 200 and r.json()["unknown_ids"] == ["ghost"]
        assert http.post("/v1/customer_scores", json=body, headers=sf).status_code == 403
        assert http.post("/v1/customer_scores", json=body).status_code == 401

        r = http.post("/v1/forecast", json={"item_ids": [ids["item"]], "horizon": 3}, headers=pl)
        assert r.status_code == 200 and len(r.json()["items"][0]["weeks"]) == 3

        models = http.post("/v1/models", json={}, headers=pl).json()
        assert models["missing"] == []
        assert all(m["labels"].get("alias") == "champion" for m in models["models"])
        assert http.post("/v1/noop", json={}, headers=pl).json() == {"ok": True}

        bad = http.post(
            "/v1/recommend",
            content=b"{not json",
            headers={**sf, "content-type": "application/json"},
        )
        assert bad.status_code == 400
        big = b'{"user_id": "' + b"x" * 2_000_000 + b'"}'
        r = http.post(
            "/v1/recommend", content=big, headers={**sf, "content-type": "application/json"}
        )
        assert r.status_code == 413
        assert http.get("/healthz").status_code == 200
        assert "/v1/forecast" in http.get("/docs.json").json()["paths"]


def test_a_burst_above_the_limit_is_shed_with_429_and_the_server_recovers(
    server: tuple[str, dict[str, str]],
) -> None:
    """BURST requests sent at once on BURST connections to a server capped at MAX_CONCURRENCY.

    The connections are opened first and every request is written before any answer is read,
    so the requests reach the server together: those beyond the cap must be answered 429 with a
    message and Retry-After, none 5xx, and the service answers 200 right after the burst.
    """
    url, _ = server
    port = int(url.rsplit(":", 1)[1])
    body = json.dumps({"limit": 100, "sort": "value_at_risk"})
    headers = {"Content-Type": "application/json", "X-API-Key": "int-mk"}
    conns = [http.client.HTTPConnection("127.0.0.1", port, timeout=30) for _ in range(BURST)]
    try:
        for c in conns:
            c.connect()
        for c in conns:
            c.request("POST", "/v1/churn_risk", body=body, headers=headers)
        answers = []
        for c in conns:
            resp = c.getresponse()
            answers.append((resp.status, resp.getheader("Retry-After"), resp.read()))
    finally:
        for c in conns:
            c.close()
    statuses = sorted(s for s, _, _ in answers)
    assert set(statuses) <= {200, 429}, statuses
    assert statuses.count(200) >= 1, statuses
    assert statuses.count(429) >= BURST // 2, statuses
    for status, retry_after, raw in answers:
        if status == 429:
            assert retry_after == "1"
            assert "server busy" in json.loads(raw)["error"]
        else:
            assert len(json.loads(raw)["rows"]) == 100
    with httpx.Client(base_url=url, timeout=10) as client:
        r = client.post("/v1/churn_risk", content=body, headers=headers)
        assert r.status_code == 200, r.text
        assert client.get("/readyz").status_code == 200
