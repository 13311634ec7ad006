"""In-process tests of the BentoML service through its ASGI app (``Shopml.to_asgi()``).

Models are fitted once per session on a tiny synthetic shop (training code is allowed here to
build fixtures; the service itself never imports it) and served via ``SHOPML_MODEL_DIR``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from starlette.testclient import TestClient

from serving.auth import KeyConfigError, KeyRing, is_loopback
from serving.shedding import ConcurrencyLimit

LOOPBACK = "http://127.0.0.1"
KEYS = "sf-key:storefront,mk-key:marketing,pl-key:planning+storefront,root-key:admin"
SECRET = "mk-key"

MakeClient = Callable[..., TestClient]


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """churn / repurchase / value / demand / recommender folders fitted on a tiny shop."""
    from training.benchmarks.serve import build_demo_models

    folder = tmp_path_factory.mktemp("models")
    build_demo_models(folder, n_customers=300, n_items=60, fast=True)
    return folder


@pytest.fixture(scope="session")
def ids(model_dir: Path) -> dict[str, list[str]]:
    customers = pd.read_parquet(model_dir / "churn" / "scores.parquet")["customer_id"].tolist()
    items = pd.read_parquet(model_dir / "demand" / "items.parquet")["item_id"].tolist()
    return {"customer": [str(c) for c in customers], "item": [str(i) for i in items]}


_APP: list[Any] = []


def asgi_app() -> Any:
    """``Shopml.to_asgi()``, built once."""
    if not _APP:
        from serving.service import Shopml

        _APP.append(Shopml.to_asgi())  # type: ignore[attr-defined]
    return _APP[0]


@pytest.fixture()
def make_client(model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[MakeClient]:
    """A factory of started TestClients; env entries set to None are removed.

    One ASGI app per session (BentoML registers Prometheus metrics per app); models and the
    guard's settings are re-read from the environment at every start-up (lifespan).
    """
    opened: list[TestClient] = []

    def make(base_url: str = LOOPBACK, **env: str | None) -> TestClient:
        defaults: dict[str, str | None] = {
            "SHOPML_MODEL_DIR": str(model_dir),
            "SHOPML_BIND_HOST": "127.0.0.1",
            "SHOPML_API_KEYS": None,
            "SHOPML_API_KEYS_FILE": None,
            "BENTOML_HOST": None,
            "SHOPML_REQUIRE_MODELS": None,
        }
        for name, value in {**defaults, **env}.items():
            if value is None:
                monkeypatch.delenv(name, raising=False)
            else:
                monkeypatch.setenv(name, value)
        client = TestClient(asgi_app(), base_url=base_url, raise_server_exceptions=False)
        client.__enter__()
        opened.append(client)
        return client

    yield make
    for client in opened:
        client.__exit__(None, None, None)


@pytest.fixture()
def client(make_client: MakeClient) -> TestClient:
    return make_client()


def fields_of(resp: Any) -> list[str]:
    """Field names an error response points at (pydantic detail locs or our ``field``)."""
    body = resp.json()
    if "detail" in body:
        return [str(d["loc"][0]) if d["loc"] else "body" for d in body["detail"]]
    return [body.get("field")]


# ---------------------------------------------------------------- happy paths
def test_recommend_known_user(client: TestClient, model_dir: Path) -> None:
    from shopml.artifacts.recommender import RecommenderArtifact

    art = RecommenderArtifact.load(model_dir / "recommender")
    user = str(art.user_ids[0])
    r = client.post("/v1/recommend", json={"user_id": user, "k": 5})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["known_user"] is True and body["user_id"] == user
    assert 1 <= len(body["items"]) <= 5
    assert {"item_id", "score", "reason", "strategy"} <= set(body["items"][0])
    assert body["model_version"].startswith("shopml-recommender")
    expected = [x.item_id for x in art.recommend(user, 5)]
    assert [i["item_id"] for i in body["items"]] == expected


def test_recommend_unknown_user_gets_popular_fallback(client: TestClient) -> None:
    r = client.post("/v1/recommend", json={"user_id": "never-seen", "k": 7})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["known_user"] is False and body["strategy"] == "popular"
    assert len(body["items"]) == 7


def test_recommend_numeric_user_id_and_filters(client: TestClient, model_dir: Path) -> None:
    from shopml.artifacts.recommender import RecommenderArtifact

    art = RecommenderArtifact.load(model_dir / "recommender")
    category = art.categories()[0]
    r = client.post(
        "/v1/recommend",
        json={"user_id": 12345, "k": 3, "category": category, "exclude_purchased": "always"},
    )
    assert r.status_code == 200, r.text
    got = [i["item_id"] for i in r.json()["items"]]
    cats = dict(zip(art.item_ids.tolist(), art.item_categories.tolist(), strict=True))
    assert got and all(cats[i] == category for i in got)
    excluded = client.post(
        "/v1/recommend",
        json={"user_id": "never-seen", "k": 3, "exclude_items": got[:1], "category": category},
    )
    assert got[0] not in [i["item_id"] for i in excluded.json()["items"]]


def test_ids_are_matched_without_surrounding_whitespace(
    client: TestClient, ids: dict[str, list[str]]
) -> None:
    # ingestion strips ids (" C1" in an export is stored as "C1"); the API did not, so the same
    # padded id was unknown
    customer, item = ids["customer"][0], ids["item"][0]
    r = client.post("/v1/customer_scores", json={"customer_ids": [f" {customer}\t"]})
    assert r.json()["unknown_ids"] == [] and r.json()["customers"][0]["customer_id"] == customer
    r = client.post("/v1/similar_items", json={"item_id": f"{item} "})
    assert r.status_code == 200 and r.json()["item_id"] == item
    r = client.post("/v1/recommend", json={"user_id": "   "})
    assert r.status_code == 400 and r.json()["field"] == "user_id"


def test_similar_items(client: TestClient, ids: dict[str, list[str]]) -> None:
    r = client.post("/v1/similar_items", json={"item_id": ids["item"][0], "k": 4})
    assert r.status_code == 200, r.text
    items = r.json()["items"]
    assert len(items) <= 4 and all(i["item_id"] != ids["item"][0] for i in items)


def test_churn_risk_paging_sort_and_filters(client: TestClient) -> None:
    first = client.post("/v1/churn_risk", json={"limit": 50})
    assert first.status_code == 200, first.text
    body = first.json()
    total, rows = body["total"], body["rows"]
    assert total > 50 and len(rows) == 50 and body["as_of"] == "2024-06-01"
    var = [r["value_at_risk"] for r in rows]
    assert var == sorted(var, reverse=True)
    seen = [r["customer_id"] for r in rows]
    cursor = body["next_cursor"]
    while cursor:
        page = client.post("/v1/churn_risk", json={"limit": 50, "cursor": cursor}).json()
        seen += [r["customer_id"] for r in page["rows"]]
        cursor = page["next_cursor"]
    assert len(seen) == total == len(set(seen))

    by_p = client.post(
        "/v1/churn_risk",
        json={"sort": "probability", "min_probability": 0.5, "segment": "dormant", "limit": 1000},
    ).json()
    probs = [r["probability"] for r in by_p["rows"]]
    assert probs == sorted(probs, reverse=True) and all(p >= 0.5 for p in probs)
    assert all(r["segment"] == "dormant" for r in by_p["rows"])
    assert by_p["next_cursor"] is None

    rich = client.post("/v1/churn_risk", json={"min_value_at_risk": 50.0}).json()
    assert all(r["value_at_risk"] >= 50.0 for r in rich["rows"])


def test_churn_risk_cursor_must_match_the_query(client: TestClient) -> None:
    cursor = client.post("/v1/churn_risk", json={"limit": 5}).json()["next_cursor"]
    r = client.post("/v1/churn_risk", json={"limit": 5, "cursor": cursor, "sort": "probability"})
    assert r.status_code == 400 and fields_of(r) == ["cursor"]
    r = client.post("/v1/churn_risk", json={"cursor": "not-a-cursor!"})
    assert r.status_code == 400 and fields_of(r) == ["cursor"]


def test_customer_scores_batch(client: TestClient, ids: dict[str, list[str]]) -> None:
    batch = [*ids["customer"][:3], "ghost", ids["customer"][0]]
    r = client.post("/v1/customer_scores", json={"customer_ids": batch})
    assert r.status_code == 200, r.text
    body = r.json()
    assert [c["customer_id"] for c in body["customers"]] == ids["customer"][:3]
    assert body["unknown_ids"] == ["ghost"]
    row = body["customers"][0]
    assert 0 <= row["churn_probability"] <= 1 and 0 <= row["repurchase_probability"] <= 1
    assert row["value_at_risk"] == pytest.approx(row["churn_probability"] * row["value"])
    assert set(body["model_versions"]) == {"churn", "repurchase", "value"}


def test_forecast(client: TestClient, ids: dict[str, list[str]]) -> None:
    item = ids["item"][0]
    r = client.post(
        "/v1/forecast",
        json={
            "item_ids": [item, "nope"],
            "horizon": 4,
            "lead_time_weeks": 2,
            "service_level": 0.9,
            "stock_on_hand": {item: 3},
        },
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["unknown_ids"] == ["nope"] and body["service_level"] == 0.9
    row = body["items"][0]
    assert len(row["weeks"]) == 4
    for w in row["weeks"]:
        assert 0 <= w["p10"] <= w["p50"] <= w["p90"] and 0 < w["share_ahead"] <= 1
    assert row["reorder_point"] >= row["safety_stock"] >= 0
    assert 0 <= row["stockout_probability"] <= 1 and row["stock_on_hand"] == 3
    assert row["stockout_risk"] == (row["stockout_probability"] > 1 - 0.9)
    assert row["revenue_at_risk"] >= 0 and row["overstock"] in (True, False)
    # without stock_on_hand: the items table's stock the model was trained with (the demo has one)
    default = client.post("/v1/forecast", json={"item_ids": [item]}).json()["items"][0]
    assert len(default["weeks"]) == 12 and default["stock_on_hand"] is not None
    assert default["stock_on_hand"] != 3 and 0 <= default["stockout_probability"] <= 1
    with warnings.catch_warnings():  # the largest stock a request may send: no overflow
        warnings.simplefilter("error", RuntimeWarning)
        big = client.post("/v1/forecast", json={"item_ids": [item], "stock_on_hand": {item: 1e12}})
    assert big.status_code == 200, big.text
    top = big.json()["items"][0]
    assert top["stockout_probability"] == 0.0 and top["revenue_at_risk"] == 0.0
    assert top["weeks_of_cover"] is None or top["weeks_of_cover"] > 1e9


def test_models_noop_readyz_and_openapi(client: TestClient) -> None:
    models = client.post("/v1/models", json={}).json()
    assert models["missing"] == []
    kinds = {m["kind"]: m for m in models["models"]}
    assert set(kinds) == {"recommender", "churn", "repurchase", "value", "demand"}
    assert all(m["loaded"] and m["as_of"] for m in kinds.values())
    # one date format for every kind (recommender and demand said "2025-01-01 00:00:00")
    assert all(re.fullmatch(r"\d{4}-\d{2}-\d{2}", m["as_of"]) for m in kinds.values()), kinds
    for kind in ("recommender", "churn", "repurchase", "demand"):  # headline validation metrics
        assert any(isinstance(v, float) for v in kinds[kind]["metrics"].values()), kind
    keys = [k for m in kinds.values() for k in m["metrics"]]
    assert all(re.fullmatch(r"[a-z0-9_@.]+", k) for k in keys), keys
    assert {"validation.roc_auc", "validation.brier"} <= set(kinds["churn"]["metrics"])
    assert {"validation.mase", "validation.coverage80"} <= set(kinds["demand"]["metrics"])
    assert client.post("/v1/noop", json={}).json() == {"ok": True}
    assert client.post("/v1/noop").status_code == 200  # empty body is {}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["missing"] == {}
    spec = client.get("/docs.json").json()
    assert {"/v1/recommend", "/v1/churn_risk", "/v1/forecast"} <= set(spec["paths"])


# ---------------------------------------------------------------- bad input: 4xx naming the field
BAD_BODIES: list[tuple[str, Any, str]] = [
    ("/v1/recommend", {"k": 5}, "user_id"),
    ("/v1/recommend", {"user_id": "u", "k": 0}, "k"),
    ("/v1/recommend", {"user_id": "u", "k": 101}, "k"),
    ("/v1/recommend", {"user_id": "u", "k": "10"}, "k"),
    ("/v1/recommend", {"user_id": "u", "k": 2.5}, "k"),
    ("/v1/recommend", {"user_id": "u", "k": True}, "k"),
    ("/v1/recommend", {"user_id": ["u"]}, "user_id"),
    ("/v1/recommend", {"user_id": ""}, "user_id"),
    ("/v1/recommend", {"user_id": "u" * 129}, "user_id"),
    ("/v1/recommend", {"user_id": "u", "exclude_purchased": "sometimes"}, "exclude_purchased"),
    ("/v1/recommend", {"user_id": "u", "exclude_items": "abc"}, "exclude_items"),
    ("/v1/recommend", {"user_id": "u", "exclude_items": ["x"] * 1001}, "exclude_items"),
    ("/v1/recommend", {"user_id": "u", "top_k": 5}, "top_k"),
    ("/v1/recommend", {"user_id": "u", "category": "no-such-category"}, "category"),
    ("/v1/similar_items", {"item_id": "x", "k": -1}, "k"),
    ("/v1/similar_items", {"item_id": None}, "item_id"),
    ("/v1/churn_risk", {"limit": 0}, "limit"),
    ("/v1/churn_risk", {"limit": 1001}, "limit"),
    ("/v1/churn_risk", {"min_probability": 1.5}, "min_probability"),
    ("/v1/churn_risk", {"min_probability": "high"}, "min_probability"),
    ("/v1/churn_risk", {"min_value_at_risk": -1}, "min_value_at_risk"),
    ("/v1/churn_risk", {"sort": "name"}, "sort"),
    ("/v1/churn_risk", {"segment": "vip"}, "segment"),
    ("/v1/customer_scores", {"customer_ids": []}, "customer_ids"),
    ("/v1/customer_scores", {"customer_ids": [str(i) for i in range(1001)]}, "customer_ids"),
    ("/v1/customer_scores", {"customer_ids": "C1"}, "customer_ids"),
    ("/v1/customer_scores", {"customer_ids": [{"id": 1}]}, "customer_ids"),
    ("/v1/forecast", {"item_ids": ["a"], "horizon": 0}, "horizon"),
    ("/v1/forecast", {"item_ids": ["a"], "horizon": 13}, "horizon"),
    ("/v1/forecast", {"item_ids": [str(i) for i in range(501)]}, "item_ids"),
    ("/v1/forecast", {"item_ids": ["a"], "service_level": 1.0}, "service_level"),
    ("/v1/forecast", {"item_ids": ["a"], "lead_time_weeks": 0}, "lead_time_weeks"),
    ("/v1/forecast", {"item_ids": ["a"], "stock_on_hand": {"a": -2}}, "stock_on_hand"),
    ("/v1/forecast", {"item_ids": ["a"], "stock_on_hand": [1, 2]}, "stock_on_hand"),
    ("/v1/forecast", {"item_ids": ["a"], "stock_on_hand": {"b": 1}}, "stock_on_hand"),
    ("/v1/forecast", {"item_ids": ["a"], "stock_on_hand": {"a": 1e308}}, "stock_on_hand"),
    ("/v1/noop", {"x": 1}, "x"),
]


@pytest.mark.parametrize(("path", "body", "field"), BAD_BODIES)
def test_bad_requests_are_4xx_naming_the_field(
    client: TestClient, path: str, body: Any, field: str
) -> None:
    r = client.post(path, json=body)
    assert 400 <= r.status_code < 500, (r.status_code, r.text)
    assert field in fields_of(r), r.text
    # the message itself names the field, not only pydantic's detail
    assert r.json()["field"] == field and field in r.json()["error"], r.text


def test_validation_messages_known_answers(client: TestClient) -> None:
    r = client.post("/v1/recommend", json={"user_id": "u", "k": 10_000})
    assert r.status_code == 400
    body = r.json()
    assert body["error"] == "k: Input should be less than or equal to 100"
    assert body["field"] == "k" and body["detail"][0]["loc"] == ["k"]  # detail kept
    r = client.post("/v1/churn_risk", json={"segment": "vip", "limit": 0})
    assert r.json()["error"].endswith("(and 1 more)") and r.json()["field"] in ("segment", "limit")
    r = client.post("/v1/forecast", json={"item_ids": ["a"], "stock_on_hand": {"a": "lots"}})
    assert r.json()["error"] == "stock_on_hand.a: Input should be a valid number"
    assert r.json()["field"] == "stock_on_hand"
    stock = {"a": 1, "x2": 2, **{f"x{n}": 1 for n in range(3, 14)}}
    r = client.post("/v1/forecast", json={"item_ids": ["a", 3, "x2"], "stock_on_hand": stock})
    want = f"stock_on_hand: ids not in item_ids: {[f'x{n}' for n in range(3, 13)]} and 1 more"
    assert r.status_code == 400 and r.json()["error"] == want, r.text
    assert r.json()["field"] == "stock_on_hand"
    r = client.post("/v1/forecast", json={"item_ids": ["a"], "stock_on_hand": {"a": 1e308}})
    assert r.json()["error"] == (
        "stock_on_hand.a: Input should be less than or equal to 1000000000000"
    )
    r = client.post(
        "/v1/recommend", content=b'{"user_id": "u"', headers={"content-type": "application/json"}
    )
    assert r.status_code == 400 and r.json()["field"] == "body"
    assert r.json()["error"].startswith("body: Invalid JSON")
    assert int(r.headers["content-length"]) == len(r.content)
    r = client.post("/v1", json={})
    assert r.status_code == 404 and r.json()["error"].startswith("no endpoint POST /v1;")


def test_recommender_headline_is_the_chosen_strategy(client: TestClient, model_dir: Path) -> None:
    from shopml.artifacts.recommender import RecommenderArtifact

    params = RecommenderArtifact.load(model_dir / "recommender").params
    val = params["validation"]
    models = client.post("/v1/models", json={}).json()["models"]
    got = next(m for m in models if m["kind"] == "recommender")["metrics"]
    for mode in ("all", "new"):
        chosen = params[f"strategy_{mode}"]
        label = chosen if chosen != "buy-again" else f"buy-again w={params['ba_pop_weight']}"
        assert got[f"validation.ndcg@10_{mode}"] == val["ndcg@10"][mode][label]
    cold = f"{params['cold_window']} country={params['cold_country_weight']}"
    assert got["validation.ndcg@10_cold"] == val["cold_ndcg@10"][cold]
    assert got["validation.users"] == val["users"] and got["validation.cold_users"] > 0
    assert not any(" " in k or "[" in k for k in got), got


def test_headline_keeps_clean_scalar_keys_only() -> None:
    from serving.service import _headline

    old_recommender = {
        "validation": {
            "window": ["2024-01-01", "2024-04-01"],
            "users": 19,
            "ndcg@10": {"all": {"popular": 0.5, "buy-again w=0.3": 0.7}},
            "cold_ndcg@10": {"all country=0.0": 0.59715},
            "cold_users": 25,
        }
    }
    assert _headline(old_recommender) == {"validation.users": 19, "validation.cold_users": 25}
    demand = {"validation": {"mase": 0.9, "mase[tsb]": 1.2, "pinball@0.9": 0.4}, "as_of": "x"}
    assert _headline(demand) == {
        "validation.mase": 0.9,
        "validation.pinball@0.9": 0.4,
        "as_of": "x",
    }


def test_field_message_leaves_other_bodies_alone() -> None:
    from serving.errors import field_message

    assert field_message({"error": "unknown category 'x'", "field": "category"}) is None
    assert field_message({"error": "1 validation error for X", "detail": []}) is None
    assert field_message([1, 2]) is None
    fixed = field_message(
        {
            "error": "1 validation error for ChurnRiskRequest",
            "detail": [{"loc": ["segment"], "msg": "Value error, unknown segment 'vip'"}],
        }
    )
    assert fixed is not None and fixed["error"] == "segment: unknown segment 'vip'"


def test_unknown_item_for_similar_items_is_404(client: TestClient) -> None:
    r = client.post("/v1/similar_items", json={"item_id": "no-such-item"})
    assert r.status_code == 404
    assert r.json()["field"] == "item_id" and "no-such-item" in r.json()["error"]


@pytest.mark.parametrize(
    ("content", "ctype", "status"),
    [
        (b"{bad json", "application/json", 400),
        (b"[1, 2, 3]", "application/json", 400),
        (b'"text"', "application/json", 400),
        (b"null", "application/json", 400),
        (b"\xff\xfe\x00", "application/json", 400),
        (b'{"user_id": "u"}', "text/plain", 415),
        (b'{"user_id": "u"}', "multipart/form-data; boundary=x", 415),
        (b'{"user_id": "u"}', "application/vnd.bentoml+pickle", 415),
        (b'{"user_id": "u"}', "application/x-www-form-urlencoded", 415),
    ],
)
def test_malformed_bodies(client: TestClient, content: bytes, ctype: str, status: int) -> None:
    r = client.post("/v1/recommend", content=content, headers={"content-type": ctype})
    assert r.status_code == status, r.text
    assert "error" in r.json()


def test_oversized_bodies_are_413(client: TestClient) -> None:
    big = json.dumps({"user_id": "u", "exclude_items": ["x" * 100] * 20_000}).encode()
    r = client.post("/v1/recommend", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["field"] == "body"

    def chunks() -> Iterator[bytes]:  # no content-length: streamed body
        yield b'{"user_id": "'
        for _ in range(2_000):
            yield b"x" * 1_000
        yield b'"}'

    r = client.post("/v1/recommend", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413


def test_unknown_category_says_what_exists(client: TestClient, model_dir: Path) -> None:
    from shopml.artifacts.registry import load_artifact

    known = [str(c) for c in load_artifact(model_dir / "recommender").artifact.categories()]
    r = client.post("/v1/recommend", json={"user_id": "u", "category": known[0].upper() + "X"})
    assert r.status_code == 400 and r.json()["field"] == "category"
    listed = ", ".join(repr(c) for c in known[:10])
    assert r.json()["error"].endswith(
        f"; known categories: {listed}"
        + (f" and {len(known) - 10} more" if len(known) > 10 else "")
    )
    r = client.post("/v1/recommend", json={"user_id": "u", "category": known[0].upper()})
    if known[0].upper() != known[0]:
        assert r.status_code == 400
        assert r.json()["error"] == (
            f"unknown category {known[0].upper()!r}; did you mean {known[0]!r}?"
        )


def test_wrong_method_and_route(client: TestClient) -> None:
    # JSON naming the route and method, like every other error (was plain text "Not Found" /
    # "Method Not Allowed")
    r = client.get("/v1/recommend")
    assert r.status_code == 405 and r.headers["content-type"] == "application/json"
    assert r.json() == {
        "error": "/v1/recommend takes POST with a JSON body, not GET",
        "field": None,
    }
    r = client.post("/v1/recomend", json={"user_id": "u"})
    assert r.status_code == 404 and r.headers["content-type"] == "application/json"
    assert r.json() == {
        "error": "no endpoint POST /v1/recomend; the routes are listed at /docs.json",
        "field": None,
    }
    assert int(r.headers["content-length"]) == len(r.content)
    r = client.post("/v1", json={})
    assert r.status_code == 404 and r.json()["error"].startswith("no endpoint POST /v1;")
    # the handlers' own JSON 404 is untouched
    r = client.post("/v1/similar_items", json={"item_id": "no-such-item"})
    assert r.status_code == 404 and r.json()["field"] == "item_id"


# ---------------------------------------------------------------- missing models
def test_missing_models_answer_503_and_are_reported(
    make_client: MakeClient, tmp_path: Path, model_dir: Path
) -> None:
    import shutil

    shutil.copytree(model_dir / "demand", tmp_path / "demand")
    (tmp_path / "recommender").mkdir()
    (tmp_path / "recommender" / "meta.json").write_text('{"kind": "recommender"}')  # broken
    client = make_client(SHOPML_MODEL_DIR=str(tmp_path))
    for path, body in [
        ("/v1/recommend", {"user_id": "u"}),
        ("/v1/similar_items", {"item_id": "i"}),
        ("/v1/churn_risk", {}),
        ("/v1/customer_scores", {"customer_ids": ["c"]}),
    ]:
        r = client.post(path, json=body)
        assert r.status_code == 503 and "not available" in r.json()["error"], (path, r.text)
    assert client.post("/v1/forecast", json={"item_ids": ["x"]}).status_code == 200
    models = client.post("/v1/models", json={}).json()
    assert set(models["missing"]) == {"recommender", "churn", "repurchase", "value"}
    rec = next(m for m in models["models"] if m["kind"] == "recommender")
    assert "failed to load" in rec["message"]
    ready = client.get("/readyz")
    assert ready.status_code == 200 and set(ready.json()["missing"]) == set(models["missing"])


def test_required_models_gate_readiness(make_client: MakeClient, tmp_path: Path) -> None:
    client = make_client(SHOPML_MODEL_DIR=str(tmp_path), SHOPML_REQUIRE_MODELS="all")
    assert client.get("/readyz").status_code == 503


# ---------------------------------------------------------------- auth
def test_keys_no_key_invalid_wrong_scope_right_scope(
    make_client: MakeClient, ids: dict[str, list[str]], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client = make_client(SHOPML_API_KEYS=KEYS)
    scores = {"customer_ids": ids["customer"][:2]}
    assert client.post("/v1/customer_scores", json=scores).status_code == 401
    bad = client.post("/v1/customer_scores", json=scores, headers={"X-API-Key": "wrong"})
    assert bad.status_code == 401 and "invalid" in bad.json()["error"]
    wrong = client.post(
        "/v1/customer_scores", json=scores, headers={"Authorization": "Bearer sf-key"}
    )
    assert wrong.status_code == 403 and "marketing" in wrong.json()["error"]
    ok = client.post(
        "/v1/customer_scores", json=scores, headers={"Authorization": f"Bearer {SECRET}"}
    )
    assert ok.status_code == 200
    assert (
        client.post(
            "/v1/recommend", json={"user_id": "u"}, headers={"X-API-Key": "sf-key"}
        ).status_code
        == 200
    )
    assert (
        client.post(
            "/v1/recommend", json={"user_id": "u"}, headers={"X-API-Key": "mk-key"}
        ).status_code
        == 403
    )
    fc = {"item_ids": ids["item"][:1]}
    assert client.post("/v1/forecast", json=fc, headers={"X-API-Key": "pl-key"}).status_code == 200
    assert client.post("/v1/forecast", json=fc, headers={"X-API-Key": "sf-key"}).status_code == 403
    assert (
        client.post("/v1/forecast", json=fc, headers={"X-API-Key": "root-key"}).status_code == 200
    )
    assert client.post("/v1/models", json={}).status_code == 401
    assert client.post("/v1/models", json={}, headers={"X-API-Key": "pl-key"}).status_code == 200
    assert client.get("/readyz").status_code == 200  # health stays open
    assert SECRET not in caplog.text and "sf-key" not in caplog.text


def test_keys_from_file(make_client: MakeClient, tmp_path: Path) -> None:
    keyfile = tmp_path / "keys"
    keyfile.write_text("# shop keys\nfile-key:storefront\n")
    client = make_client(SHOPML_API_KEYS_FILE=str(keyfile))
    assert client.post("/v1/noop", json={}).status_code == 401
    assert client.post("/v1/noop", json={}, headers={"X-API-Key": "file-key"}).status_code == 200


@pytest.mark.parametrize(
    ("env", "base_url"),
    [
        ({"SHOPML_BIND_HOST": "0.0.0.0"}, LOOPBACK),
        ({"SHOPML_BIND_HOST": None}, LOOPBACK),  # unknown bind host: bentoml defaults to 0.0.0.0
        ({"SHOPML_BIND_HOST": None, "BENTOML_HOST": "10.1.2.3"}, LOOPBACK),
        ({"SHOPML_BIND_HOST": "127.0.0.1"}, "http://10.1.2.3"),  # arrived on a public address
    ],
)
def test_non_loopback_without_keys_refuses_customer_endpoints(
    make_client: MakeClient, env: dict[str, str | None], base_url: str
) -> None:
    client = make_client(base_url=base_url, **env)
    for path, body in [("/v1/churn_risk", {}), ("/v1/customer_scores", {"customer_ids": ["c"]})]:
        r = client.post(path, json=body)
        assert r.status_code == 403 and "SHOPML_API_KEYS" in r.json()["error"], r.text
    assert client.post("/v1/recommend", json={"user_id": "u"}).status_code == 200


def test_non_loopback_with_keys_allows_customer_endpoints(make_client: MakeClient) -> None:
    client = make_client(SHOPML_BIND_HOST="0.0.0.0", SHOPML_API_KEYS=KEYS)
    r = client.post("/v1/churn_risk", json={}, headers={"X-API-Key": SECRET})
    assert r.status_code == 200


def test_loopback_bentoml_host_allows_customer_endpoints(make_client: MakeClient) -> None:
    client = make_client(SHOPML_BIND_HOST=None, BENTOML_HOST="127.0.0.1")
    assert client.post("/v1/churn_risk", json={"limit": 1}).status_code == 200


def test_keyring_parsing() -> None:
    ring = KeyRing.parse("a:storefront, b:marketing+planning\n# comment\nc:d:admin")
    assert ring.scopes_of("a") == {"storefront"}
    assert ring.scopes_of("b") == {"marketing", "planning"}
    assert ring.scopes_of("c:d") == {"admin"}
    assert ring.scopes_of("nope") is None
    assert not KeyRing.parse("").enabled
    for bad in ("nokey", "k:", "k:root", ":storefront"):
        with pytest.raises(KeyConfigError):
            KeyRing.parse(bad)
    with pytest.raises(KeyConfigError) as err:
        KeyRing.parse("supersecret:wrongscope")
    assert "supersecret" not in str(err.value)
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback(None) and not is_loopback("testserver")


async def _empty_body() -> dict[str, Any]:
    """ASGI ``receive`` of a request without a body (the middleware never reads it)."""
    return {"type": "http.request", "body": b"", "more_body": False}


def test_concurrency_limit_sheds_beyond_the_cap_with_retry_after() -> None:
    """Cap 2: two /v1 requests hold the app, the third is 429 at once; health paths pass."""

    async def scenario() -> list[tuple[int, dict[str, str], dict[str, Any]]]:
        release = asyncio.Event()
        inside = 0

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            nonlocal inside
            inside += 1
            await release.wait()
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"{}"})

        limit = ConcurrencyLimit(app, limit=2)
        answers: list[tuple[int, dict[str, str], dict[str, Any]]] = []

        async def call(path: str) -> None:
            sent: list[dict[str, Any]] = []

            async def send(message: dict[str, Any]) -> None:
                sent.append(message)

            await limit({"type": "http", "path": path}, _empty_body, send)
            headers = {k.decode(): v.decode() for k, v in sent[0].get("headers", [])}
            answers.append((sent[0]["status"], headers, json.loads(sent[1]["body"])))

        async def settle() -> None:
            for _ in range(3):
                await asyncio.sleep(0)

        held = [asyncio.create_task(call("/v1/recommend")) for _ in range(2)]
        await settle()
        assert inside == 2 and limit.in_progress == 2
        await call("/v1/forecast")  # over the cap: answered without waiting
        passing = asyncio.create_task(call("/readyz"))  # not counted, not shed
        await settle()
        assert inside == 3 and limit.shed == 1
        release.set()
        await asyncio.gather(*held, passing)
        assert limit.in_progress == 0
        await call("/v1/recommend")  # below the cap again
        return answers

    answers = asyncio.run(scenario())
    status, headers, body = answers[0]
    assert status == 429 and headers["retry-after"] == "1"
    assert "2 requests in progress" in body["error"] and body["field"] is None
    assert sorted(a[0] for a in answers) == [200, 200, 200, 200, 429]


def test_requests_arriving_together_are_counted_together() -> None:
    """Handlers that never yield (CPU-bound ``async def``) still see each other's requests."""

    async def scenario() -> list[int]:
        async def cpu_bound(scope: dict[str, Any], receive: Any, send: Any) -> None:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"{}"})

        limit = ConcurrencyLimit(cpu_bound, limit=2)
        statuses: list[int] = []

        async def call() -> None:
            async def send(message: dict[str, Any]) -> None:
                if message["type"] == "http.response.start":
                    statuses.append(message["status"])

            await limit({"type": "http", "path": "/v1/noop"}, _empty_body, send)

        await asyncio.gather(*(call() for _ in range(5)))
        return statuses

    assert sorted(asyncio.run(scenario())) == [200, 200, 429, 429, 429]


def test_concurrency_limit_zero_is_no_cap_and_negative_is_an_error() -> None:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    open_ = ConcurrencyLimit(app, limit=0)
    open_.in_progress = 10**6
    asyncio.run(open_({"type": "http", "path": "/v1/noop"}, _empty_body, send))
    assert sent[0]["status"] == 200
    with pytest.raises(ValueError, match="SHOPML_MAX_CONCURRENCY"):
        ConcurrencyLimit(app, limit=-1)


def test_forecast_of_a_mid_week_as_of_counts_from_as_of() -> None:
    """Known answer: an artifact made on a Saturday (week 1 = the 2 units of the weekend, 2/7 of
    a week, share 0.25 of the week's units): the answer says so per week, and the lead time of 1
    week from as_of holds 2 + 5/7 x 7 = 7 units, not week 1 + week 2 = 9."""
    import numpy as np

    from serving.runtime import DemandView
    from shopml.artifacts.demand import DemandArtifact

    q = np.full((3, 1, 12), 7.0)
    q[:, :, 0] = 2.0
    art = DemandArtifact.build(
        items=pd.Index(["a"]),
        origin=pd.Timestamp("2011-12-04"),
        quantiles=q,
        point=q[1],
        history=np.zeros((1, 4)),
        history_weeks=pd.date_range("2011-11-13", periods=4, freq="7D"),
        price=np.array([2.0]),
        category=np.array(["c"], dtype=object),
        names=np.array(["n"], dtype=object),
        meta={"as_of": "2011-12-10", "first_week_share": 0.25, "first_week_span": 2 / 7},
    )
    out = DemandView(art, "1").forecast(["a"], 3, 1.0, 0.95, {"a": 12.0})
    row = out["items"][0]
    assert [w["share_ahead"] for w in row["weeks"]] == [0.25, 1.0, 1.0]
    assert row["weeks"][0]["p50"] == 2.0 and row["weeks"][0]["week_ending"] == "2011-12-11"
    assert row["expected_lead_time_demand"] == pytest.approx(7.0)
    assert row["reorder_point"] == pytest.approx(7.0)
    assert row["weeks_of_cover"] == pytest.approx(12.0 / 7.0)
    # an artifact without the fields (made before them, or on a Monday): whole weeks
    art.meta = {"as_of": "2011-12-05"}
    whole = DemandView(art, "1").forecast(["a"], 2, 1.0, 0.95, {"a": 12.0})["items"][0]
    assert [w["share_ahead"] for w in whole["weeks"]] == [1.0, 1.0]
    assert whole["expected_lead_time_demand"] == pytest.approx(2.0)
