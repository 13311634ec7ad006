"""The shopml prediction service (BentoML 1.4 class API).

Routes (all ``POST``, JSON in and out, schemas in :mod:`serving.schemas`):
``/v1/recommend``, ``/v1/similar_items`` (storefront), ``/v1/churn_risk``,
``/v1/customer_scores`` (marketing), ``/v1/forecast`` (planning), ``/v1/models``, ``/v1/noop``;
plus BentoML's ``/healthz``, ``/livez``, ``/metrics``, ``/docs.json`` and a JSON ``/readyz`` that
lists loaded and missing models.

Models are resolved once per worker at start-up (:func:`serving.models.find_models`); a missing or
broken model never stops start-up, its endpoints answer 503 with a message. Request bodies are
validated by pydantic (400; :mod:`serving.errors` names the failing field in ``error`` and
``field``, pydantic's ``detail`` kept); every client error is ``{"error": ..., "field": ...}``
with a 4xx status. Auth, body-size limit and readiness live in
:class:`serving.auth.ApiGuard`.

Environment: ``SHOPML_WORKERS`` (default 1), ``SHOPML_MODEL_DIR``, ``SHOPML_API_KEYS``,
``SHOPML_API_KEYS_FILE``, ``SHOPML_BIND_HOST``, ``SHOPML_MAX_BODY_BYTES``,
``SHOPML_REQUIRE_MODELS`` (comma list or ``all``: ``/readyz`` is 503 until those are loaded),
``SHOPML_MAX_CONCURRENCY`` (default 64 ``/v1`` requests in progress per worker; beyond, 429 with
``Retry-After``: :mod:`serving.shedding`; 0: no cap).

The handlers are ``async def`` and run on the event loop (no thread hop: the fastest path for
these sub-millisecond, GIL-holding handlers). Plain ``def`` handlers in BentoML's thread pool were
measured and rejected: under 4x overload the pool is fed one request per event-loop turn, and
those turns fill with rejections, so the 200s collapsed to a few per second (docs/RELIABILITY.md).
"""

from __future__ import annotations

import logging
import os
import re
import time
from typing import Any

import bentoml
from pydantic import ValidationError
from starlette.responses import JSONResponse

from serving.auth import READINESS, ApiGuard
from serving.errors import FieldErrors
from serving.models import KINDS, ModelSource, find_models
from serving.runtime import CustomerView, DemandView, RequestError, ScoreTable, load_artifact
from serving.schemas import (
    ChurnRiskRequest,
    ChurnRiskResponse,
    CustomerScoresRequest,
    CustomerScoresResponse,
    EmptyRequest,
    ForecastRequest,
    ForecastResponse,
    ModelInfo,
    ModelsResponse,
    NoopResponse,
    RecommendedItem,
    RecommendRequest,
    RecommendResponse,
    SimilarItem,
    SimilarItemsRequest,
    SimilarItemsResponse,
)
from serving.shedding import DEFAULT_MAX_CONCURRENCY, ConcurrencyLimit

log = logging.getLogger(__name__)

CUSTOMER_KINDS = ("churn", "repurchase", "value")
SCORE_COLUMNS = {"churn": "churn_proba", "repurchase": "repurchase_proba", "value": "value"}
WORKERS = int(os.environ.get("SHOPML_WORKERS", "1"))
#: ``/v1`` requests in progress per worker beyond which the service answers 429 (0: no cap).
MAX_CONCURRENCY = int(os.environ.get("SHOPML_MAX_CONCURRENCY", str(DEFAULT_MAX_CONCURRENCY)))


class _DropClientErrors(logging.Filter):
    """Drop BentoML's traceback log of request-validation errors (they are client 400s)."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, ValidationError)


def _quiet_client_errors() -> None:
    logger = logging.getLogger("bentoml._internal.server.http_app")
    if not any(isinstance(f, _DropClientErrors) for f in logger.filters):
        logger.addFilter(_DropClientErrors())


def _error(status: int, message: str, field: str | None = None) -> JSONResponse:
    return JSONResponse({"error": message, "field": field}, status_code=status)


def _unavailable(kind: str, source: ModelSource | None, why: str | None) -> JSONResponse:
    detail = why or (source.message if source else None) or "not loaded"
    return _error(503, f"the {kind} model is not available: {detail}", None)


@bentoml.service(
    name="shopml",
    workers=WORKERS,
    traffic={"timeout": 30},
    logging={"access": {"enabled": False}},
)
class Shopml:
    """Recommendations, churn-risk lists, propensity scores and demand forecasts."""

    def __init__(self) -> None:
        started = time.perf_counter()
        _quiet_client_errors()
        self.sources: dict[str, ModelSource] = find_models()
        self.artifacts: dict[str, Any] = {}
        self.errors: dict[str, str] = {}
        #: Kinds served from an older version because the newest one failed to load.
        self.fallbacks: dict[str, str] = {}
        for kind in list(self.sources):
            self._load(kind)
        self.customers = self._customer_view()
        self.demand = self._demand_view()
        self.recommender = self._checked_recommender()
        loaded = {k: self.sources[k].tag or k for k in self.artifacts if k not in self.errors}
        missing = {
            k: self.errors.get(k) or self.sources[k].message or "not loaded"
            for k in KINDS
            if k not in loaded
        }
        required = os.environ.get("SHOPML_REQUIRE_MODELS", "")
        READINESS.required = (
            KINDS
            if required == "all"
            else tuple(r.strip() for r in required.split(",") if r.strip())
        )
        READINESS.models, READINESS.missing, READINESS.loaded = loaded, missing, True
        READINESS.fallbacks = dict(self.fallbacks)
        log.info(
            "shopml service ready in %.1f s: loaded %s; missing %s",
            time.perf_counter() - started,
            sorted(loaded),
            sorted(missing),
        )

    def _load(self, kind: str) -> None:
        """Load ``kind``'s newest loadable version; older store versions are the fallback.

        A version that fails to load never stops start-up: the next older one is served and the
        failure is reported by ``/readyz`` (``fallbacks``) and ``/v1/models``; with none left the
        kind's endpoints answer 503.
        """
        src = self.sources[kind]
        failures: list[str] = []
        for candidate in [src, *src.fallbacks]:
            if candidate.path is None:
                if candidate.message and candidate is not src:
                    failures.append(candidate.message)
                continue
            try:
                self.artifacts[kind] = load_artifact(kind, candidate.path)
            except Exception as exc:  # a broken artifact must not stop start-up
                log.exception("loading model %s from %s failed", kind, candidate.path)
                failures.append(f"failed to load {candidate.tag}: {type(exc).__name__}: {exc}")
                continue
            if candidate is not src:
                self.sources[kind] = candidate
                newest = src.message or "; ".join(failures)
                self.fallbacks[kind] = f"{newest}; serving the older {candidate.tag}"
                log.error("model %s: %s", kind, self.fallbacks[kind])
            return
        if failures:
            self.errors[kind] = "; ".join(failures)

    def _version(self, kind: str) -> str:
        src = self.sources.get(kind)
        return (src.tag if src else None) or kind

    def _customer_view(self) -> CustomerView | None:
        tables: dict[str, ScoreTable | None] = {}
        for kind in CUSTOMER_KINDS:
            art = self.artifacts.get(kind)
            tables[kind] = None
            if art is None:
                continue
            try:
                tables[kind] = ScoreTable.from_artifact(art, SCORE_COLUMNS[kind])
            except Exception as exc:
                log.exception("score table of %s unusable", kind)
                self.errors[kind] = f"score table unusable: {exc}"
        if not any(tables.values()):
            return None
        versions = {k: self._version(k) for k, t in tables.items() if t is not None}
        return CustomerView(tables["churn"], tables["repurchase"], tables["value"], versions)

    def _demand_view(self) -> DemandView | None:
        art = self.artifacts.get("demand")
        if art is None:
            return None
        try:
            return DemandView(art, self._version("demand"))
        except Exception as exc:
            log.exception("demand model unusable")
            self.errors["demand"] = f"demand table unusable: {exc}"
            return None

    def _checked_recommender(self) -> Any:
        """The recommender after a smoke call (cold user, first item), else ``None``."""
        rec = self.artifacts.get("recommender")
        if rec is None:
            return None
        try:
            rec.recommend("__shopml_smoke__", k=1)
            if rec.n_items:
                rec.similar_items(str(rec.item_ids[0]), k=1)
        except Exception as exc:
            log.exception("recommender unusable")
            self.errors["recommender"] = f"smoke test failed: {type(exc).__name__}: {exc}"
            return None
        return rec

    def _missing(self, kind: str) -> JSONResponse:
        return _unavailable(kind, self.sources.get(kind), self.errors.get(kind))

    # ------------------------------------------------------------ storefront
    @bentoml.api(route="/v1/recommend", output_spec=RecommendResponse)
    async def recommend(self, req: RecommendRequest, /) -> RecommendResponse | JSONResponse:
        """Top-k items for a user (unknown users: popular fallback)."""
        rec = self.recommender
        if rec is None:
            return self._missing("recommender")
        try:
            recs = rec.recommend(
                req.user_id,
                k=req.k,
                category=req.category,
                exclude=req.exclude_purchased,
                exclude_items=req.exclude_items,
            )
        except ValueError as exc:  # unknown category
            return _error(400, _category_hint(str(exc), req.category, rec), "category")
        items = [
            RecommendedItem(item_id=r[0], score=float(r[1]), reason=r[2], strategy=r[3])
            for r in recs
        ]
        return RecommendResponse(
            user_id=req.user_id,
            known_user=rec.knows_user(req.user_id),
            strategy=items[0].strategy if items else "none",
            items=items,
            model_version=self._version("recommender"),
        )

    @bentoml.api(route="/v1/similar_items", output_spec=SimilarItemsResponse)
    async def similar_items(
        self, req: SimilarItemsRequest, /
    ) -> SimilarItemsResponse | JSONResponse:
        """Items that go with an item; unknown item -> 404."""
        rec = self.recommender
        if rec is None:
            return self._missing("recommender")
        try:
            pairs = rec.similar_items(req.item_id, k=req.k)
        except KeyError:
            return _error(404, f"unknown item_id {req.item_id!r}", "item_id")
        reason = f"often bought by customers who bought {req.item_id}"
        return SimilarItemsResponse(
            item_id=req.item_id,
            items=[SimilarItem(item_id=str(i), score=float(v), reason=reason) for i, v in pairs],
            model_version=self._version("recommender"),
        )

    # ------------------------------------------------------------ marketing
    @bentoml.api(route="/v1/churn_risk", output_spec=ChurnRiskResponse)
    async def churn_risk(self, req: ChurnRiskRequest, /) -> ChurnRiskResponse | JSONResponse:
        """A page of customers ranked by value at risk or churn probability."""
        view = self.customers
        if view is None or view.churn is None:
            return self._missing("churn")
        try:
            page = view.churn_risk(
                segment=req.segment,
                min_probability=req.min_probability,
                min_value_at_risk=req.min_value_at_risk,
                sort=req.sort,
                limit=req.limit,
                cursor=req.cursor,
            )
        except RequestError as exc:
            return _error(exc.status, exc.message, exc.field)
        return ChurnRiskResponse.model_validate(page)

    @bentoml.api(route="/v1/customer_scores", output_spec=CustomerScoresResponse)
    async def customer_scores(
        self, req: CustomerScoresRequest, /
    ) -> CustomerScoresResponse | JSONResponse:
        """Churn, repurchase, value, segment and reasons for up to 1000 customers."""
        view = self.customers
        if view is None:
            return self._missing("churn")
        return CustomerScoresResponse.model_validate(view.customer_scores(req.customer_ids))

    # ------------------------------------------------------------ planning
    @bentoml.api(route="/v1/forecast", output_spec=ForecastResponse)
    async def forecast(self, req: ForecastRequest, /) -> ForecastResponse | JSONResponse:
        """Weekly P10/P50/P90 and reorder advice for up to 500 items."""
        view = self.demand
        if view is None:
            return self._missing("demand")
        try:
            out = view.forecast(
                req.item_ids,
                req.horizon,
                req.lead_time_weeks,
                req.service_level,
                req.stock_on_hand,
            )
        except RequestError as exc:
            return _error(exc.status, exc.message, exc.field)
        return ForecastResponse.model_validate(out)

    # ------------------------------------------------------------ ops
    @bentoml.api(route="/v1/models", output_spec=ModelsResponse)
    async def models(self, req: EmptyRequest, /) -> ModelsResponse:
        """Served model versions, training dates, as_of and headline metrics."""
        infos = []
        for kind in KINDS:
            src = self.sources.get(kind) or ModelSource(kind, None, message="not looked up")
            art = self.artifacts.get(kind)
            meta = dict(getattr(art, "meta", {}) or {})
            metrics = getattr(art, "metrics", None) or meta.get("metrics") or {}
            if not metrics:  # recommender: params; demand: the combination's validation scores
                params = getattr(art, "params", None)
                found = (
                    params.get("validation")
                    if isinstance(params, dict)
                    else (meta.get("combination") or {}).get("scores")
                )
                metrics = {"validation": found or {}}
            infos.append(
                ModelInfo(
                    kind=kind,
                    loaded=art is not None and kind not in self.errors,
                    tag=src.tag,
                    source=src.source,
                    created_at=src.created_at,
                    as_of=_date_text(getattr(art, "as_of", None) or meta.get("as_of")),
                    trained_at=src.metadata.get("trained_at") or meta.get("trained_at"),
                    model_kind=src.metadata.get("artifact_kind") or meta.get("kind"),
                    metrics=_headline(metrics),
                    labels=src.labels,
                    message=self.errors.get(kind) or self.fallbacks.get(kind) or src.message,
                )
            )
        return ModelsResponse(models=infos, missing=[m.kind for m in infos if not m.loaded])

    @bentoml.api(route="/v1/noop", output_spec=NoopResponse)
    async def noop(self, req: EmptyRequest, /) -> NoopResponse:
        """Does nothing: the latency floor of this server."""
        return NoopResponse()


#: How many known categories an unknown-category error lists.
MAX_CATEGORIES_IN_ERROR = 10


def _category_hint(message: str, category: str | None, rec: Any) -> str:
    """The unknown-category error with what would have matched: the category differing only in
    case, else the known categories (at most :data:`MAX_CATEGORIES_IN_ERROR`)."""
    listing = getattr(rec, "categories", None)
    try:
        known = [str(c) for c in (listing() if callable(listing) else listing or [])]
    except Exception:  # a hint only: the error itself stands
        known = []
    if category is None or not known:
        return message
    same = [c for c in known if c.casefold() == category.strip().casefold()]
    if same:
        return f"{message}; did you mean {same[0]!r}?"
    more = len(known) - MAX_CATEGORIES_IN_ERROR
    listed = ", ".join(map(repr, known[:MAX_CATEGORIES_IN_ERROR]))
    return f"{message}; known categories: {listed}" + (f" and {more} more" if more > 0 else "")


def _date_text(value: Any) -> str | None:
    """``as_of`` as ``YYYY-MM-DD`` when it is a midnight (``2025-01-01 00:00:00`` and
    ``2025-01-01`` are the same cutoff; the kinds wrote it either way), else as it is."""
    text = str(value or "").strip()
    for midnight in (" 00:00:00", "T00:00:00"):
        text = text.removesuffix(midnight)
    return text or None


#: Headline metric keys: lower-case letters, digits and ``_ @ .`` (``validation.roc_auc``,
#: ``validation.pinball@0.9``). Labelled per-candidate scores (``mase[tsb]``,
#: ``all country=0.0``) are training diagnostics, not headline metrics.
HEADLINE_KEY = re.compile(r"[a-z0-9_@.]+")


def _headline(metrics: dict[str, Any], prefix: str = "", depth: int = 2) -> dict[str, Any]:
    """Scalar metrics under :data:`HEADLINE_KEY` keys, nested dicts flattened to dotted keys (at
    most ``depth`` levels: ``validation.roc_auc``; deeper tables are left out)."""
    out: dict[str, Any] = {}
    for k, v in metrics.items():
        key = f"{prefix}{k}"
        if not HEADLINE_KEY.fullmatch(key):
            continue
        if isinstance(v, int | float | str | bool):
            out[key] = v
        elif isinstance(v, dict) and depth > 1:
            out.update(_headline(v, f"{key}.", depth - 1))
    return out


# The first middleware added is the outer one: shedding is the cheapest check, so it comes first;
# FieldErrors, the inner one, rewrites only the answers of the app itself.
Shopml.add_asgi_middleware(ConcurrencyLimit, limit=MAX_CONCURRENCY)  # type: ignore[attr-defined]
Shopml.add_asgi_middleware(ApiGuard)  # type: ignore[attr-defined]
Shopml.add_asgi_middleware(FieldErrors)  # type: ignore[attr-defined]
