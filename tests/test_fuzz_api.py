"""Property-based fuzzing of every HTTP endpoint from the service's own OpenAPI schema.

Schemathesis generates valid (positive) and invalid (negative) requests for each operation of
``/docs.json``; the in-process ASGI app (``Shopml.to_asgi()``, tiny demo models) must answer each
with a non-5xx JSON response whose 200 bodies validate against the response models the schema
is generated from. Explicit cases add what generators rarely reach: huge, empty, unicode,
negative, NaN/inf, duplicated values and wrong content types.

Known gap (upstream): BentoML 1.4.40 flattens ``X | None`` to ``X`` in the inline request and
response schemas (``_bentoml_sdk.method._flatten_field`` keeps ``anyOf[0]``), so nullable fields
such as ``next_cursor`` are published as non-nullable. Schemathesis' own
``response_schema_conformance`` would flag every ``null``; 200 bodies are therefore validated
against the pydantic response models (the component schemas, which keep ``anyOf [.., null]``).
"""

from __future__ import annotations

import importlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from pydantic import BaseModel
from starlette.testclient import TestClient

from serving import schemas

LOOPBACK = "http://127.0.0.1"
#: Examples per operation and generation mode in CI (the slow test multiplies it).
CI_EXAMPLES = int(os.environ.get("SHOPML_FUZZ_EXAMPLES", "100"))
SLOW_EXAMPLES = 1000

RESPONSES: dict[str, type[BaseModel]] = {
    "/v1/recommend": schemas.RecommendResponse,
    "/v1/similar_items": schemas.SimilarItemsResponse,
    "/v1/churn_risk": schemas.ChurnRiskResponse,
    "/v1/customer_scores": schemas.CustomerScoresResponse,
    "/v1/forecast": schemas.ForecastResponse,
    "/v1/models": schemas.ModelsResponse,
    "/v1/noop": schemas.NoopResponse,
}
#: Every operation the schema must publish (a new endpoint must be added here to be fuzzed).
OPERATIONS = sorted(
    [("POST", p) for p in RESPONSES]
    + [("GET", p) for p in ("/healthz", "/livez", "/readyz", "/metrics")]
)

COUNTS: dict[str, int] = {}


def _asgi_app() -> Any:
    """The session's one ``Shopml.to_asgi()`` (shared with test_service: metrics register once)."""
    return importlib.import_module("test_service").asgi_app()


@pytest.fixture(scope="module", autouse=True)
def report_counts() -> Iterator[None]:
    """Print how many requests each operation got (``pytest -s``: the figures of RELIABILITY.md)."""
    yield
    if COUNTS:
        print(f"\nAPI fuzz requests: {sum(COUNTS.values())} {dict(sorted(COUNTS.items()))}")


@pytest.fixture(scope="module")
def fuzz_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny fitted models of every kind."""
    from training.benchmarks.serve import build_demo_models

    folder = tmp_path_factory.mktemp("fuzz-models")
    build_demo_models(folder, n_customers=300, n_items=60, fast=True)
    return folder


@pytest.fixture(scope="module")
def started(
    fuzz_models: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[TestClient, Any]]:
    """A started TestClient (lifespan: models loaded) and the app, loopback, no keys."""
    env = {
        "SHOPML_MODEL_DIR": str(fuzz_models),
        "SHOPML_BIND_HOST": "127.0.0.1",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path_factory.mktemp("prom")),
    }
    saved = {k: os.environ.get(k) for k in [*env, "SHOPML_API_KEYS", "SHOPML_API_KEYS_FILE"]}
    os.environ.update(env)
    os.environ.pop("SHOPML_API_KEYS", None)
    os.environ.pop("SHOPML_API_KEYS_FILE", None)
    app = _asgi_app()
    client = TestClient(app, base_url=LOOPBACK, raise_server_exceptions=True)
    client.__enter__()
    try:
        yield client, app
    finally:
        client.__exit__(None, None, None)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="module")
def api_schema(started: tuple[TestClient, Any]) -> Any:
    import schemathesis

    client, _ = started
    raw = client.get("/docs.json").json()
    return schemathesis.openapi.from_dict(raw)


def check_response(path: str, status: int, body: bytes, ctype: str) -> None:
    """No 5xx; JSON errors for 4xx; 200 bodies validate against the response model."""
    assert status < 500, f"{path}: {status} {body[:300]!r}"
    if path == "/metrics" and status == 200:
        assert body.startswith(b"#") or b"bentoml" in body or body == b""
        return
    if path.startswith("/v1/") or status >= 400:
        assert ctype.startswith("application/json"), f"{path}: {status} {ctype} {body[:200]!r}"
        payload = json.loads(body)
        if status >= 400:
            assert isinstance(payload, dict) and ("error" in payload or "detail" in payload)
        elif path in RESPONSES:
            RESPONSES[path].model_validate(payload)


def test_schema_publishes_every_operation(api_schema: Any) -> None:
    found = sorted((op.ok().method.upper(), op.ok().path) for op in api_schema.get_all_operations())
    assert set(OPERATIONS) <= set(found), set(OPERATIONS) - set(found)


def _fuzz(api_schema: Any, app: Any, method: str, path: str, mode: str, examples: int) -> None:
    from schemathesis import checks
    from schemathesis.generation import GenerationMode
    from schemathesis.python.asgi import ASGIClient

    operation = api_schema[path][method]
    session = ASGIClient(app, base_url=LOOPBACK)  # not entered: the TestClient owns the lifespan
    gen = GenerationMode.POSITIVE if mode == "positive" else GenerationMode.NEGATIVE
    wanted = [checks.not_a_server_error, checks.content_type_conformance]
    if mode == "positive":
        wanted.append(checks.status_code_conformance)

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        derandomize=examples <= CI_EXAMPLES,
    )
    @given(case=operation.as_strategy(generation_mode=gen))
    def run(case: Any) -> None:
        COUNTS[f"{path}:{mode}"] = COUNTS.get(f"{path}:{mode}", 0) + 1
        response = case.call(session=session)
        case.validate_response(response, checks=wanted)
        check_response(
            path,
            response.status_code,
            response.content,
            response.headers.get("content-type", [""])[0],
        )

    run()


@pytest.mark.parametrize("mode", ["positive", "negative"])
@pytest.mark.parametrize(("method", "path"), OPERATIONS)
def test_fuzz_operation(
    api_schema: Any, started: tuple[TestClient, Any], method: str, path: str, mode: str
) -> None:
    if mode == "negative" and method == "GET":
        pytest.skip("GET operations take no parameters: nothing negative to generate")
    _fuzz(api_schema, started[1], method, path, mode, CI_EXAMPLES)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_fuzz_every_operation_long(
    api_schema: Any, started: tuple[TestClient, Any], mode: str
) -> None:
    for method, path in OPERATIONS:
        if mode == "negative" and method == "GET":
            continue
        _fuzz(api_schema, started[1], method, path, mode, SLOW_EXAMPLES)


# ---------------------------------------------------------------- explicit cases
LONG = "x" * 10_000
UNICODE_IDS = ["ü", "用户", "🛒🙂", "\u200b", "\u202eevil", "a\u0000b", "Ω" * 128, " ", "\t\n"]
HUGE_INT = 10**30

JSON_CASES: list[tuple[str, Any]] = [
    # huge
    ("/v1/recommend", {"user_id": "u", "k": HUGE_INT}),
    ("/v1/recommend", {"user_id": LONG}),
    ("/v1/recommend", {"user_id": "u", "exclude_items": [f"i{n}" for n in range(5000)]}),
    ("/v1/customer_scores", {"customer_ids": [str(n) for n in range(1000)]}),
    ("/v1/customer_scores", {"customer_ids": [str(n) for n in range(1001)]}),
    ("/v1/forecast", {"item_ids": [str(n) for n in range(500)], "horizon": 12}),
    ("/v1/forecast", {"item_ids": ["a"], "stock_on_hand": {"a": 1e308}}),
    ("/v1/forecast", {"item_ids": ["a"], "lead_time_weeks": 1e308}),
    ("/v1/churn_risk", {"limit": 1000, "min_value_at_risk": 1e308}),
    ("/v1/churn_risk", {"cursor": "A" * 512}),
    ("/v1/churn_risk", {"cursor": "A" * 513}),
    # empty
    ("/v1/recommend", {}),
    ("/v1/recommend", {"user_id": ""}),
    ("/v1/customer_scores", {"customer_ids": []}),
    ("/v1/forecast", {"item_ids": []}),
    ("/v1/forecast", {"item_ids": ["a"], "stock_on_hand": {}}),
    ("/v1/similar_items", {"item_id": ""}),
    ("/v1/churn_risk", {"cursor": ""}),
    ("/v1/models", {}),
    # negative and out of range
    ("/v1/recommend", {"user_id": "u", "k": -1}),
    ("/v1/recommend", {"user_id": "u", "k": 0}),
    ("/v1/similar_items", {"item_id": "a", "k": -(10**9)}),
    ("/v1/churn_risk", {"min_probability": -0.5}),
    ("/v1/churn_risk", {"limit": -1}),
    ("/v1/forecast", {"item_ids": ["a"], "horizon": -3}),
    ("/v1/forecast", {"item_ids": ["a"], "stock_on_hand": {"a": -1}}),
    ("/v1/forecast", {"item_ids": ["a"], "service_level": 0.5}),
    ("/v1/forecast", {"item_ids": ["a"], "lead_time_weeks": 0}),
    # wrong JSON types
    ("/v1/recommend", {"user_id": None}),
    ("/v1/recommend", {"user_id": ["u"]}),
    ("/v1/recommend", {"user_id": {"a": 1}}),
    ("/v1/recommend", {"user_id": True}),
    ("/v1/recommend", {"user_id": "u", "k": "10"}),
    ("/v1/recommend", {"user_id": "u", "k": 1.5}),
    ("/v1/recommend", {"user_id": "u", "top_k": 3}),
    ("/v1/churn_risk", {"segment": "no-such-segment"}),
    ("/v1/churn_risk", {"sort": "random"}),
    ("/v1/forecast", {"item_ids": "a"}),
    ("/v1/customer_scores", {"customer_ids": [None]}),
    ("/v1/noop", {"unexpected": 1}),
    ("/v1/recommend", []),
    ("/v1/recommend", "user"),
    ("/v1/recommend", None),
    ("/v1/recommend", 42),
    # duplicated values
    ("/v1/customer_scores", {"customer_ids": ["c1"] * 1000}),
    ("/v1/forecast", {"item_ids": ["a", "a", "a"], "stock_on_hand": {"a": 1}}),
    ("/v1/recommend", {"user_id": "u", "exclude_items": ["i", "i", "i"]}),
    # numbers as ids
    ("/v1/recommend", {"user_id": 1e308}),
    ("/v1/recommend", {"user_id": -0.0}),
    ("/v1/customer_scores", {"customer_ids": [1, 1.0, "1"]}),
]
JSON_CASES += [("/v1/recommend", {"user_id": u}) for u in UNICODE_IDS]
JSON_CASES += [("/v1/similar_items", {"item_id": u}) for u in UNICODE_IDS]
JSON_CASES += [("/v1/customer_scores", {"customer_ids": UNICODE_IDS})]
JSON_CASES += [("/v1/forecast", {"item_ids": UNICODE_IDS, "stock_on_hand": {"🛒🙂": 3}})]
JSON_CASES += [("/v1/recommend", {"user_id": "u", "category": u}) for u in UNICODE_IDS]

RAW_CASES: list[tuple[str, bytes, str]] = [
    # NaN / inf are not JSON, but Python's json and many clients send them
    ("/v1/churn_risk", b'{"min_probability": NaN}', "application/json"),
    ("/v1/churn_risk", b'{"min_value_at_risk": Infinity}', "application/json"),
    ("/v1/churn_risk", b'{"min_value_at_risk": -Infinity}', "application/json"),
    ("/v1/churn_risk", b'{"min_value_at_risk": 1e999}', "application/json"),
    ("/v1/forecast", b'{"item_ids": ["a"], "stock_on_hand": {"a": NaN}}', "application/json"),
    ("/v1/forecast", b'{"item_ids": ["a"], "lead_time_weeks": Infinity}', "application/json"),
    ("/v1/forecast", b'{"item_ids": ["a"], "service_level": NaN}', "application/json"),
    ("/v1/recommend", b'{"user_id": NaN}', "application/json"),
    ("/v1/recommend", b'{"user_id": "u", "k": 1e999}', "application/json"),
    # duplicated keys
    ("/v1/recommend", b'{"user_id": "a", "user_id": "b", "k": 1, "k": 2}', "application/json"),
    (
        "/v1/forecast",
        b'{"item_ids": ["a"], "stock_on_hand": {"a": 1, "a": -1}}',
        "application/json",
    ),
    # empty and broken bodies
    ("/v1/recommend", b"", "application/json"),
    ("/v1/noop", b"", "application/json"),
    ("/v1/recommend", b"{", "application/json"),
    ("/v1/recommend", b'{"user_id": "u"', "application/json"),
    ("/v1/recommend", b"\xff\xfe\x00\x00", "application/json"),
    ("/v1/recommend", '{"user_id": "ü"}'.encode("latin-1"), "application/json"),
    ("/v1/recommend", '{"user_id": "ü"}'.encode("utf-16"), "application/json"),
    ("/v1/recommend", b'{"user_id": "\\ud800"}', "application/json"),
    ("/v1/recommend", b'{"user_id": "\\u0000"}', "application/json"),
    ("/v1/recommend", b"[" * 100_000 + b"]" * 100_000, "application/json"),
    ("/v1/recommend", b'{"a":' * 50_000 + b"1" + b"}" * 50_000, "application/json"),
    ("/v1/recommend", b'{"user_id": "u", "k": ' + b"9" * 5000 + b"}", "application/json"),
    # wrong content types
    ("/v1/recommend", b'{"user_id": "u"}', "text/plain"),
    ("/v1/recommend", b"user_id=u", "application/x-www-form-urlencoded"),
    ("/v1/recommend", b"--x\r\n\r\nu\r\n--x--", "multipart/form-data; boundary=x"),
    ("/v1/recommend", b"<user_id>u</user_id>", "application/xml"),
    ("/v1/recommend", b'{"user_id": "u"}', "application/json; charset=latin-1"),
    ("/v1/recommend", b'{"user_id": "u"}', "APPLICATION/JSON"),
    ("/v1/recommend", b'{"user_id": "u"}', "application/octet-stream"),
    ("/v1/forecast", b'{"item_ids": ["a"]}', "image/png"),
    ("/v1/noop", b"{}", "application/vnd.bentoml+pickle"),
    ("/v1/noop", b"\x80\x04N.", "application/vnd.bentoml+pickle"),
]


@pytest.mark.parametrize(("path", "body"), JSON_CASES, ids=lambda v: str(v)[:40])
def test_explicit_json_cases(started: tuple[TestClient, Any], path: str, body: Any) -> None:
    client, _ = started
    r = client.post(path, json=body)
    check_response(path, r.status_code, r.content, r.headers.get("content-type", ""))


@pytest.mark.parametrize(("path", "body", "ctype"), RAW_CASES, ids=lambda v: repr(v)[:40])
def test_explicit_raw_cases(
    started: tuple[TestClient, Any], path: str, body: bytes, ctype: str
) -> None:
    client, _ = started
    r = client.post(path, content=body, headers={"content-type": ctype})
    check_response(path, r.status_code, r.content, r.headers.get("content-type", ""))
    assert r.status_code != 200 or ctype.split(";")[0].strip().lower() == "application/json"


@pytest.mark.parametrize("path", sorted(RESPONSES))
def test_wrong_methods_and_headers(started: tuple[TestClient, Any], path: str) -> None:
    client, _ = started
    for method in ("GET", "PUT", "DELETE", "PATCH"):
        r = client.request(method, path)
        assert r.status_code in (404, 405), (method, path, r.status_code)
    weird = {
        "content-length": "abc",
        "content-type": "application/json",
    }
    r = client.post(path, content=b"{}", headers=weird)
    assert r.status_code < 500
    r = client.post(path, content=b"{}", headers={"authorization": "Bearer " + "k" * 8000})
    assert r.status_code < 500
