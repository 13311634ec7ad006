"""Request and response models of the HTTP API (they are the OpenAPI schema).

Requests forbid unknown fields (a typo such as ``top_k`` is a 400 naming the field) and use strict
integers (``"10"`` or ``10.5`` for ``k`` is a 400). Ids may be sent as strings or numbers; they
are compared as strings without surrounding whitespace, as in the data contract.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, ValidationInfo, field_validator

from features.segments import SEGMENTS

MAX_K = 100
MAX_LIMIT = 1000
MAX_BATCH = 1000
MAX_FORECAST_ITEMS = 500
MAX_HORIZON = 12
MAX_EXCLUDE = 1000
MAX_ID_LENGTH = 128
#: Largest stock on hand a request may send, in units (beyond any shop's real stock).
MAX_STOCK = 1e12
#: How many offending ids an error message lists.
MAX_IDS_IN_ERROR = 10

Id = Annotated[str, Field(min_length=1, max_length=MAX_ID_LENGTH)]
Number = Annotated[float, Field(strict=True, allow_inf_nan=False)]
Stock = Annotated[Number, Field(ge=0, le=MAX_STOCK)]
ExcludePolicy = Literal["auto", "always", "never"]
SortKey = Literal["value_at_risk", "probability"]


def _openapi30_bounds(schema: dict[str, Any]) -> None:
    """Rewrite JSON-Schema-2020 exclusive bounds (numbers) as OpenAPI 3.0 (``minimum`` + flag).

    BentoML publishes ``openapi: 3.0.2``, where ``exclusiveMinimum``/``exclusiveMaximum`` are
    booleans next to ``minimum``/``maximum``; pydantic's numeric form made the schema invalid
    (validators and client generators reject the forecast operation).
    """
    for bound, flag in (("minimum", "exclusiveMinimum"), ("maximum", "exclusiveMaximum")):
        value = schema.get(flag)
        if isinstance(value, int | float) and not isinstance(value, bool):
            schema[bound], schema[flag] = value, True
    for sub in schema.get("anyOf", ()):
        if isinstance(sub, dict):
            _openapi30_bounds(sub)
    for sub in schema.get("properties", {}).values():
        if isinstance(sub, dict):
            _openapi30_bounds(sub)


class _Request(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        coerce_numbers_to_str=True,
        str_strip_whitespace=True,  # ids as ingestion stores them (" C1" in an export is "C1")
        frozen=True,
        json_schema_extra=_openapi30_bounds,  # type: ignore[typeddict-item]
    )


class _Response(BaseModel):
    model_config = ConfigDict(protected_namespaces=())


# ---------------------------------------------------------------- storefront
class RecommendRequest(_Request):
    """Top-k items for one user."""

    model_config = ConfigDict(title="RecommendRequest")

    user_id: Id = Field(description="customer id; unknown or new users get the popular fallback")
    k: StrictInt = Field(10, ge=1, le=MAX_K, description="number of items (1..100)")
    category: Id | None = Field(None, description="only items of this category")
    exclude_purchased: ExcludePolicy = Field(
        "auto",
        description="auto: the model's default (consumables may be bought again); "
        "always: never recommend items the user bought; never: do not filter them",
    )
    exclude_items: list[Id] = Field(
        default_factory=list, max_length=MAX_EXCLUDE, description="item ids not to recommend"
    )


class RecommendedItem(_Response):
    item_id: str
    score: float
    reason: str = Field(description="short plain-language reason")
    strategy: str = Field(description="which strategy produced this item")


class RecommendResponse(_Response):
    user_id: str
    known_user: bool = Field(description="false when the popular fallback answered")
    strategy: str = Field(description="strategy of the first item (personalized, buy-again, ...)")
    items: list[RecommendedItem]
    model_version: str


class SimilarItemsRequest(_Request):
    """Items that go with one item."""

    model_config = ConfigDict(title="SimilarItemsRequest")

    item_id: Id
    k: StrictInt = Field(10, ge=1, le=MAX_K, description="number of items (1..100)")


class SimilarItem(_Response):
    item_id: str
    score: float
    reason: str = ""


class SimilarItemsResponse(_Response):
    item_id: str
    items: list[SimilarItem]
    model_version: str


# ---------------------------------------------------------------- marketing
class ChurnRiskRequest(_Request):
    """A page of the churn-risk list."""

    model_config = ConfigDict(title="ChurnRiskRequest")

    segment: str | None = Field(None, description=f"only this segment: one of {list(SEGMENTS)}")
    min_probability: Number = Field(0.0, ge=0.0, le=1.0, description="P(churn) at least this")
    min_value_at_risk: Number = Field(0.0, ge=0.0, description="value at risk at least this")
    sort: SortKey = Field("value_at_risk", description="descending order of this column")
    limit: StrictInt = Field(100, ge=1, le=MAX_LIMIT, description="rows per page (1..1000)")
    cursor: str | None = Field(
        None, max_length=512, description="next_cursor of the previous page (same filters)"
    )

    @field_validator("segment")
    @classmethod
    def _known_segment(cls, value: str | None) -> str | None:
        if value is not None and value not in SEGMENTS:
            raise ValueError(f"unknown segment {value!r}; expected one of {list(SEGMENTS)}")
        return value


class ChurnRiskRow(_Response):
    customer_id: str
    probability: float = Field(description="calibrated P(no purchase in the churn window)")
    value: float | None = Field(description="expected spend over the value horizon")
    value_at_risk: float | None = Field(description="probability x value")
    segment: str
    reasons: list[str]


class ChurnRiskResponse(_Response):
    rows: list[ChurnRiskRow]
    total: int = Field(description="customers matching the filters")
    next_cursor: str | None = Field(description="pass as cursor for the next page; null at the end")
    model_version: str
    as_of: str


class CustomerScoresRequest(_Request):
    """Scores for a batch of customers."""

    model_config = ConfigDict(title="CustomerScoresRequest")

    customer_ids: list[Id] = Field(min_length=1, max_length=MAX_BATCH, description="1..1000 ids")


class CustomerScore(_Response):
    customer_id: str
    churn_probability: float | None
    repurchase_probability: float | None
    value: float | None
    value_at_risk: float | None
    segment: str | None
    churn_reasons: list[str]
    repurchase_reasons: list[str]


class CustomerScoresResponse(_Response):
    customers: list[CustomerScore]
    unknown_ids: list[str] = Field(description="ids not in the score tables (new customers)")
    model_versions: dict[str, str]
    as_of: str | None


# ---------------------------------------------------------------- planning
class ForecastRequest(_Request):
    """Weekly quantile forecasts and reorder advice for a batch of items."""

    model_config = ConfigDict(title="ForecastRequest")

    item_ids: list[Id] = Field(min_length=1, max_length=MAX_FORECAST_ITEMS, description="1..500")
    horizon: StrictInt = Field(12, ge=1, le=MAX_HORIZON, description="weeks ahead (1..12)")
    lead_time_weeks: Number | None = Field(
        None, gt=0, le=52, description="replenishment lead time (default: the model's)"
    )
    service_level: Number | None = Field(
        None, gt=0.5, lt=1.0, description="target cycle service level (default: the model's)"
    )
    stock_on_hand: dict[Id, Stock] | None = Field(
        None,
        max_length=MAX_FORECAST_ITEMS,
        description="units on hand (0..1e12) per item id, each one of item_ids "
        "(default: the item table's, when known)",
    )

    @field_validator("stock_on_hand")
    @classmethod
    def _ids_requested(
        cls, value: dict[str, float] | None, info: ValidationInfo
    ) -> dict[str, float] | None:
        requested = info.data.get("item_ids")  # absent when item_ids itself is invalid
        if value is not None and requested is not None:
            wanted = set(requested)
            extra = [i for i in value if i not in wanted]
            if extra:
                more = len(extra) - MAX_IDS_IN_ERROR
                tail = f" and {more} more" if more > 0 else ""
                raise ValueError(f"ids not in item_ids: {extra[:MAX_IDS_IN_ERROR]}{tail}")
        return value


class WeekForecast(_Response):
    week_ending: str
    p10: float
    p50: float
    p90: float
    share_ahead: float = Field(
        1.0,
        description="share of the week's units still ahead of as_of (below 1 only for the "
        "current week of a mid-week as_of, whose P10/P50/P90 are then that remaining demand)",
    )


class ItemForecast(_Response):
    item_id: str
    weeks: list[WeekForecast]
    expected_lead_time_demand: float
    reorder_point: float = Field(description="service-level quantile of lead-time demand")
    safety_stock: float
    order_up_to: float
    stock_on_hand: float | None
    stockout_probability: float | None = Field(
        description="P(demand over the lead time exceeds stock on hand); null without stock"
    )
    order_quantity: float | None = Field(description="units to order now; null without stock")
    weeks_of_cover: float | None = Field(description="null without stock or when unbounded")
    stockout_risk: bool | None = Field(
        None, description="stock-out more likely than the service level allows; null without stock"
    )
    overstock: bool | None = Field(
        None, description="slow mover: cover far beyond the forecast horizon; null without stock"
    )
    revenue_at_risk: float | None = Field(
        None, description="expected units short over the lead time x last price; null without stock"
    )


class ForecastResponse(_Response):
    items: list[ItemForecast]
    unknown_ids: list[str] = Field(description="item ids the model has no series for")
    lead_time_weeks: float
    service_level: float
    review_period_weeks: float
    model_version: str
    as_of: str | None


# ---------------------------------------------------------------- models, noop, errors
class ModelInfo(_Response):
    kind: str
    loaded: bool
    tag: str | None = None
    source: str | None = None
    created_at: str | None = None
    as_of: str | None = None
    trained_at: str | None = Field(
        None, description="start of the training run, ISO 8601 UTC; null for older models"
    )
    model_kind: str | None = Field(None, description="the artifact's own kind (meta.json)")
    metrics: dict[str, Any] = Field(
        default_factory=dict,
        description="headline validation metrics, dotted lower-case keys such as "
        "validation.roc_auc, validation.mase, validation.ndcg@10_all",
    )
    labels: dict[str, str] = Field(default_factory=dict)
    message: str | None = Field(None, description="why a model is not loaded")


class ModelsResponse(_Response):
    models: list[ModelInfo]
    missing: list[str]


class EmptyRequest(_Request):
    """No fields."""

    model_config = ConfigDict(title="EmptyRequest")


class NoopResponse(_Response):
    ok: bool = True


class ErrorResponse(_Response):
    error: str
    field: str | None = None
