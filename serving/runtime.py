"""Serving-side views of the loaded artifacts: id -> row maps and numpy columns built once.

Nothing here runs per-request pandas: customer score tables become numpy arrays with pre-sorted
orders, the demand table becomes a dict of row positions into its quantile array.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


class RequestError(Exception):
    """A client error: HTTP ``status`` with a message naming ``field``."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field


def load_artifact(kind: str, folder: Path) -> Any:
    """The native runtime object of one artifact folder (via :mod:`shopml.artifacts.registry`).

    The registry's tabular wrappers (for MLflow pyfunc) are unwrapped: serving calls the runtimes'
    native methods. A folder holding another kind than ``kind`` is an error.
    """
    from shopml.artifacts.registry import artifact_kind
    from shopml.artifacts.registry import load_artifact as registry_load

    found = artifact_kind(folder)
    if found != kind:
        raise ValueError(f"{folder} holds a {found!r} model, expected {kind!r}")
    loaded = registry_load(folder)
    return getattr(loaded, "artifact", loaded)


def _split_reasons(value: Any) -> list[str]:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return []
    if isinstance(value, str):
        return [r.strip() for r in value.split(";") if r.strip()]
    return [str(r) for r in value]


def _opt(x: float) -> float | None:
    return None if math.isnan(x) else float(x)


# ---------------------------------------------------------------- customers
@dataclass
class ScoreTable:
    """One customer score table as arrays: ids, one score column, segments, reasons."""

    ids: np.ndarray
    score: np.ndarray
    segment: np.ndarray
    reasons: list[list[str]]
    index: dict[str, int]
    as_of: str | None

    @classmethod
    def from_artifact(cls, artifact: Any, column: str) -> ScoreTable:
        """Arrays from ``artifact.scores`` (a DataFrame with ``customer_id`` and ``column``)."""
        df = artifact.scores
        if df is None or column not in df.columns:
            raise ValueError(f"the artifact has no score table with a {column!r} column")
        ids = df["customer_id"].astype(str).to_numpy(dtype=object)
        n = len(ids)
        segment = (
            df["segment"].astype(str).to_numpy(dtype=object)
            if "segment" in df.columns
            else np.full(n, "", dtype=object)
        )
        reasons = (
            [_split_reasons(r) for r in df["reasons"].tolist()]
            if "reasons" in df.columns
            else [[] for _ in range(n)]
        )
        as_of = str(df["as_of"].iloc[0]) if "as_of" in df.columns and n else artifact.as_of
        return cls(
            ids=ids,
            score=df[column].to_numpy(dtype=np.float64),
            segment=segment,
            reasons=reasons,
            index={c: i for i, c in enumerate(ids)},
            as_of=as_of,
        )


def _encode_cursor(payload: dict[str, Any]) -> str:
    raw = json.dumps(payload, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> dict[str, Any]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        payload = json.loads(raw)
        if not isinstance(payload, dict) or not isinstance(payload.get("o"), int):
            raise ValueError
        return payload
    except ValueError as exc:
        raise RequestError(
            400, "cursor is not a cursor returned by this service", "cursor"
        ) from exc


@dataclass
class CustomerView:
    """Churn list and per-customer scores over the churn / repurchase / value tables."""

    churn: ScoreTable | None
    repurchase: ScoreTable | None
    value: ScoreTable | None
    versions: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.churn is None:
            return
        c = self.churn
        if self.value is not None:
            pos = np.array([self.value.index.get(i, -1) for i in c.ids], dtype=np.int64)
            val = np.where(pos >= 0, self.value.score[np.maximum(pos, 0)], np.nan)
        else:
            val = np.full(len(c.ids), np.nan)
        self.churn_value = val
        self.churn_var = c.score * val
        # descending, NaN last, ties by customer id (stable pages)
        id_rank = np.argsort(np.argsort(c.ids.astype(str)))
        var_key = np.where(np.isnan(self.churn_var), -np.inf, self.churn_var)
        self.orders = {
            "value_at_risk": np.lexsort((id_rank, -c.score, -var_key)),
            "probability": np.lexsort((id_rank, -var_key, -c.score)),
        }

    @property
    def as_of(self) -> str | None:
        for t in (self.churn, self.repurchase, self.value):
            if t is not None:
                return t.as_of
        return None

    def churn_risk(
        self,
        *,
        segment: str | None,
        min_probability: float,
        min_value_at_risk: float,
        sort: str,
        limit: int,
        cursor: str | None,
    ) -> dict[str, Any]:
        """One page of the churn list (see :class:`serving.schemas.ChurnRiskResponse`)."""
        assert self.churn is not None
        c = self.churn
        query = json.dumps(
            [segment, min_probability, min_value_at_risk, sort, self.versions.get("churn")]
        )
        qhash = hashlib.sha256(query.encode()).hexdigest()[:16]
        offset = 0
        if cursor:
            payload = _decode_cursor(cursor)
            if payload.get("q") != qhash:
                raise RequestError(
                    400,
                    "cursor belongs to a different query (filters, sort) or model version; "
                    "start again without a cursor",
                    "cursor",
                )
            offset = max(0, int(payload["o"]))
        mask = c.score >= min_probability
        if min_value_at_risk > 0:
            mask &= np.nan_to_num(self.churn_var, nan=-1.0) >= min_value_at_risk
        if segment is not None:
            mask &= c.segment == segment
        order = self.orders[sort]
        selected = order[mask[order]]
        total = len(selected)
        page = selected[offset : offset + limit]
        end = offset + len(page)
        rows = [
            {
                "customer_id": c.ids[i],
                "probability": float(c.score[i]),
                "value": _opt(self.churn_value[i]),
                "value_at_risk": _opt(self.churn_var[i]),
                "segment": c.segment[i],
                "reasons": c.reasons[i],
            }
            for i in page.tolist()
        ]
        return {
            "rows": rows,
            "total": total,
            "next_cursor": _encode_cursor({"o": end, "q": qhash}) if end < total else None,
            "model_version": self.versions.get("churn", ""),
            "as_of": c.as_of or "",
        }

    def customer_scores(self, customer_ids: Sequence[str]) -> dict[str, Any]:
        """Scores of each known id (first occurrence order); unknown ids listed apart."""
        out: list[dict[str, Any]] = []
        unknown: list[str] = []
        seen: set[str] = set()
        ch, rp, va = self.churn, self.repurchase, self.value
        for cid in customer_ids:
            if cid in seen:
                continue
            seen.add(cid)
            ic = ch.index.get(cid) if ch else None
            ir = rp.index.get(cid) if rp else None
            iv = va.index.get(cid) if va else None
            if ic is None and ir is None and iv is None:
                unknown.append(cid)
                continue
            p_churn = float(ch.score[ic]) if ch is not None and ic is not None else None
            value = _opt(va.score[iv]) if va is not None and iv is not None else None
            segment = None
            if ch is not None and ic is not None:
                segment = ch.segment[ic]
            elif rp is not None and ir is not None:
                segment = rp.segment[ir]
            out.append(
                {
                    "customer_id": cid,
                    "churn_probability": p_churn,
                    "repurchase_probability": (
                        float(rp.score[ir]) if rp is not None and ir is not None else None
                    ),
                    "value": value,
                    "value_at_risk": (
                        p_churn * value if p_churn is not None and value is not None else None
                    ),
                    "segment": segment,
                    "churn_reasons": ch.reasons[ic] if ch is not None and ic is not None else [],
                    "repurchase_reasons": (
                        rp.reasons[ir] if rp is not None and ir is not None else []
                    ),
                }
            )
        return {
            "customers": out,
            "unknown_ids": unknown,
            "model_versions": dict(self.versions),
            "as_of": self.as_of,
        }


# ---------------------------------------------------------------- demand
@dataclass
class DemandView:
    """Weekly quantile forecasts by item id plus reorder advice (:func:`inventory.plan`)."""

    artifact: Any
    version: str
    default_lead_time_weeks: float = 2.0
    default_service_level: float = 0.95
    review_period_weeks: float = 1.0

    def __post_init__(self) -> None:
        a = self.artifact
        self.ids = [str(i) for i in a.items]
        self.index = {i: n for n, i in enumerate(self.ids)}
        self.week_labels = [str(w.date()) for w in a.weeks]
        self.q = np.asarray(a.quantiles, dtype=np.float64)
        self.price = np.nan_to_num(np.asarray(a.price, dtype=np.float64), nan=0.0)
        self.horizon = int(self.q.shape[2])
        meta = getattr(a, "meta", {}) or {}
        self.as_of = str(meta.get("as_of") or a.origin)[:10]
        stock = meta.get("stock_on_hand") or {}
        self.stock = {str(k): float(v) for k, v in stock.items()} if isinstance(stock, dict) else {}
        # a mid-week as_of: week 1 holds only the demand still ahead (see training.demand)
        self.first_week_share = float(meta.get("first_week_share", 1.0))
        self.first_week_span = float(meta.get("first_week_span", 1.0))

    def forecast(
        self,
        item_ids: Sequence[str],
        horizon: int,
        lead_time_weeks: float | None,
        service_level: float | None,
        stock_on_hand: dict[str, float] | None,
    ) -> dict[str, Any]:
        """Forecast rows for the known ids; unknown ids listed apart (never raises KeyError)."""
        from shopml.artifacts.inventory import plan

        lead = float(lead_time_weeks or self.default_lead_time_weeks)
        level = float(service_level or self.default_service_level)
        if horizon > self.horizon:
            raise RequestError(
                400, f"horizon must be <= {self.horizon} for the served model", "horizon"
            )
        ids: list[str] = []
        unknown: list[str] = []
        seen: set[str] = set()
        for i in item_ids:
            if i in seen:
                continue
            seen.add(i)
            (ids if i in self.index else unknown).append(i)
        pos = np.fromiter((self.index[i] for i in ids), dtype=np.int64, count=len(ids))
        q = self.q[:, pos, :]
        stock = {**self.stock, **(stock_on_hand or {})}
        soh = [stock.get(i) for i in ids]
        on_hand = np.array([0.0 if s is None else s for s in soh], dtype=np.float64)
        p = plan(
            q[0],
            q[1],
            q[2],
            lead_time=lead,
            review_period=self.review_period_weeks,
            service_level=level,
            on_hand=on_hand,
            price=self.price[pos],
            first_week_span=self.first_week_span,
        )
        cols = {k: np.asarray(v, dtype=np.float64).tolist() for k, v in p.items()}
        weeks = self.week_labels[:horizon]
        shares = [self.first_week_share] + [1.0] * (horizon - 1)
        p10, p50, p90 = (q[k, :, :horizon].tolist() for k in range(3))
        items = []
        for n, item in enumerate(ids):
            known = soh[n] is not None
            items.append(
                {
                    "item_id": item,
                    "weeks": [
                        {"week_ending": w, "p10": a, "p50": b, "p90": c, "share_ahead": s}
                        for w, a, b, c, s in zip(weeks, p10[n], p50[n], p90[n], shares, strict=True)
                    ],
                    "expected_lead_time_demand": cols["expected_lead_time_demand"][n],
                    "reorder_point": cols["reorder_point"][n],
                    "safety_stock": cols["safety_stock"][n],
                    "order_up_to": cols["order_up_to"][n],
                    "stock_on_hand": soh[n],
                    "stockout_probability": cols["p_stockout"][n] if known else None,
                    "order_quantity": cols["order_quantity"][n] if known else None,
                    "weeks_of_cover": _finite(cols["weeks_of_cover"][n]) if known else None,
                    "stockout_risk": bool(cols["stockout_risk"][n]) if known else None,
                    "overstock": bool(cols["overstock"][n]) if known else None,
                    "revenue_at_risk": cols["revenue_at_risk"][n] if known else None,
                }
            )
        return {
            "items": items,
            "unknown_ids": unknown,
            "lead_time_weeks": lead,
            "service_level": level,
            "review_period_weeks": self.review_period_weeks,
            "model_version": self.version,
            "as_of": self.as_of,
        }


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None
