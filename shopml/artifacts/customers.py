"""Runtime of the customer models (churn, repurchase propensity, customer value).

One :class:`CustomerArtifact` is one servable model: a LightGBM booster (text), or a baseline that
needs no booster (recency, frequency, BG/NBD), plus its calibration map, feature list, reason-code
phrase templates and a precomputed score table of every customer as of the training date.

Folder layout written by :meth:`CustomerArtifact.save`::

    meta.json        kind, task, horizon, feature list, calibration (Platt), BTYD parameters,
                     metrics, phrase templates, library versions
    model.txt        LightGBM booster (kinds ``lightgbm``, ``lightgbm-rfm``)
    calibration.npz  isotonic thresholds ``x``, ``y`` (allow_pickle=False), when isotonic
    scores.parquet   the score table (customer_id, score, segment, reasons, ...)

Kinds: ``lightgbm`` / ``lightgbm-rfm`` (booster on features; ``lightgbm`` optionally blended
with the BG/NBD score, see :attr:`CustomerArtifact.blend`), ``baseline-recency`` (log days since
last purchase), ``baseline-frequency`` (log number of orders), ``baseline-bgnbd`` (BG/NBD
P(no purchase in the window)), and for value ``bgnbd-gammagamma`` (expected spend).
Nothing here trains anything or imports :mod:`training`.
"""

from __future__ import annotations

import functools
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
from scipy.special import betaln, expit, gammaln, hyp2f1, logit

from shopml.artifacts.meta import library_versions

TASKS = ("churn", "repurchase", "value")
KINDS = (
    "lightgbm",
    "lightgbm-rfm",
    "baseline-recency",
    "baseline-frequency",
    "baseline-bgnbd",
    "bgnbd-gammagamma",
)
META = "meta.json"
MODEL = "model.txt"
CALIBRATION = "calibration.npz"
SCORES = "scores.parquet"

#: Rewrites of formatted phrases that read stiffly with a count of 0 or 1 ("spend 0 in the last
#: 30 days" -> "no spend in the last 30 days", "1 orders" -> "1 order"); applied in order.
TIDY_RULES: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"^spend 0 in the (.+)$"), r"no spend in the \1"),
    (re.compile(r"^0 orders in the (.+)$"), r"no orders in the \1"),
    (re.compile(r"^1 orders\b"), "1 order"),
    (re.compile(r"^0 returns$"), "no returns"),
    (re.compile(r"^1 returns$"), "1 return"),
    (re.compile(r"^spend (?:up|down) 0% vs previous quarter$"), "spend flat vs previous quarter"),
    (
        re.compile(r"^order count changed by [+-]?0 vs previous quarter$"),
        "same order count as the previous quarter",
    ),
    (re.compile(r"^ordered on 0 more days within"), "no other order within"),
    (re.compile(r"^ordered on 1 more days within"), "ordered on 1 more day within"),
    (re.compile(r"^ordered in 0 weeks of the last (\d+) days$"), r"no order in the last \1 days"),
    (re.compile(r"^ordered in 1 weeks of"), "ordered in 1 week of"),
    (re.compile(r"^ordered in 1 different months$"), "ordered in only 1 month"),
    (re.compile(r"^bought 1 different items$"), "bought only 1 item"),
    (re.compile(r"^bought from 1 categories$"), "bought from only 1 category"),
    (re.compile(r"^customer for 1 days$"), "customer for 1 day"),
    (re.compile(r"^no order for 1 days$"), "no order for 1 day"),
    # below 0.05, no order is younger than the half-life (each such order adds at least 0.5)
    (
        re.compile(r"^0\.0 recency-weighted orders \(an order counts half after (\d+) days\)$"),
        r"no order in the last \1 days",
    ),
    (re.compile(r"^their country has 0% of"), "their country has under 1% of"),
    # within the usual gap, "no order for 0.8x the usual gap" reads as if overdue
    (re.compile(r"^no order for (0\.\d)x the usual gap$"), r"last order \1x the usual gap ago"),
]

#: Phrases that state one fact in different words ("no orders in the last 30 days", "no spend in
#: the last 30 days", "no order for 40 days"): a customer's reasons keep the first of each fact.
FACT_RULES: list[tuple[re.Pattern[str], str]] = [
    (
        re.compile(r"^no (?:orders?|spend) in the last \d+ days$|^no order for \d+ days?$"),
        "no recent order",
    ),
    (re.compile(r"^last gap between orders was "), "last gap"),
    (re.compile(r"^[\d.]+ recency-weighted orders "), "recency-weighted orders"),
    (re.compile(r"^spend [\d,]+ in the last \d+ days$"), "recent spend"),
    (re.compile(r"^\d+ orders? in the last \d+ days$"), "recent orders"),
    (
        re.compile(
            r"^(?:ordered on one day only so far|never ordered again after the first order"
            r"|1 order so far|ordered in only 1 month)$"
        ),
        "one-time buyer",
    ),
]


_TIDY_ANY = re.compile("|".join(f"(?:{p.pattern})" for p, _ in TIDY_RULES))


def tidy_phrase(text: str) -> str:
    """``text`` with the first matching :data:`TIDY_RULES` rewrite (unchanged when none)."""
    if not _TIDY_ANY.match(text):  # one anchored match for the usual phrase with no rewrite
        return text
    for pattern, replacement in TIDY_RULES:
        new, n = pattern.subn(replacement, text)
        if n:
            return new
    return text


@functools.lru_cache(maxsize=1 << 16)
def fact_of(text: str) -> str:
    """The fact a reason phrase states (:data:`FACT_RULES`; else the phrase itself)."""
    for pattern, fact in FACT_RULES:
        if pattern.match(text):
            return fact
    return text


#: The features each derived phrase field is computed from (see :meth:`CustomerArtifact.phrase`).
DERIVED_FIELDS: dict[str, tuple[str, ...]] = {
    "pct_change": ("spend_change_90d",),
    "up_down": ("spend_change_90d",),
    "repeat_text": ("repeat_days",),
    "item_buyers": ("item_popularity",),
}

ONE_DAY = "ordered on one day only so far"

#: Plain-language phrases for reason codes, formatted with the customer's feature values and the
#: derived fields ``pct_change``, ``up_down``, ``repeat_text``, ``item_buyers`` (typical number of
#: buyers of their items) and ``activity`` ("little"/"strong": read by phrases saved in older
#: artifacts). ``<feature>:missing`` is said when the feature is missing (NaN); other features
#: without a phrase or a number use ``default``.
PHRASES: dict[str, str] = {
    "recency_days": "no order for {recency_days:.0f} days",
    "gap_ratio": "no order for {gap_ratio:.1f}x the usual gap",
    "gap_mean": "usually orders every {gap_mean:.0f} days",
    "gap_last": "last gap between orders was {gap_last:.0f} days",
    "gap_std": "irregular ordering rhythm",
    "n_orders": "{n_orders:.0f} orders so far",
    "repeat_days": "{repeat_text}",
    "tenure_days": "customer for {tenure_days:.0f} days",
    "span_days": "first to last order spans {span_days:.0f} days",
    "tenure_per_order": "one order per {tenure_per_order:.0f} days on average",
    "monetary_total": "total spend {monetary_total:,.0f}",
    "monetary_mean": "average order value {monetary_mean:,.0f}",
    "orders_30d": "{orders_30d:.0f} orders in the last 30 days",
    "orders_90d": "{orders_90d:.0f} orders in the last 90 days",
    "orders_180d": "{orders_180d:.0f} orders in the last 180 days",
    "spend_30d": "spend {spend_30d:,.0f} in the last 30 days",
    "spend_90d": "spend {spend_90d:,.0f} in the last 90 days",
    "spend_180d": "spend {spend_180d:,.0f} in the last 180 days",
    "orders_prev90d": "{orders_prev90d:.0f} orders in the quarter before last",
    "spend_prev90d": "spend {spend_prev90d:,.0f} in the quarter before last",
    "spend_change_90d": "spend {up_down} {pct_change:.0f}% vs previous quarter",
    "orders_trend": "order count changed by {orders_trend:+.0f} vs previous quarter",
    "orders_decay7": (
        "{orders_decay7:.1f} recency-weighted orders (an order counts half after 7 days)"
    ),
    "orders_decay30": (
        "{orders_decay30:.1f} recency-weighted orders (an order counts half after 30 days)"
    ),
    "orders_decay90": (
        "{orders_decay90:.1f} recency-weighted orders (an order counts half after 90 days)"
    ),
    "orders_decay180": (
        "{orders_decay180:.1f} recency-weighted orders (an order counts half after 180 days)"
    ),
    "gap_trend": "last gap between orders was {gap_trend:.1f}x the usual gap",
    "first_gap": "second order came {first_gap:.0f} days after the first",
    "repeat_first90d": "ordered on {repeat_first90d:.0f} more days within 90 days of the first",
    "basket_lines": "{basket_lines:.0f} lines per order",
    "basket_units": "{basket_units:.0f} units per order",
    "unit_price_mean": "average unit price {unit_price_mean:.2f}",
    "units_per_line": "{units_per_line:.0f} units per line",
    "distinct_items": "bought {distinct_items:.0f} different items",
    "items_per_order": "{items_per_order:.0f} different items per order",
    "item_popularity": "buys items that typically have {item_buyers:,.0f} buyers",
    "item_repeat_rate": "buys items that are often re-bought ({item_repeat_rate:.0%})",
    "item_retention": "buys items after which {item_retention:.0%} of buyers reorder within a month",
    "last_order_retention": (
        "after their last order's items {last_order_retention:.0%} of buyers reorder within a month"
    ),
    "distinct_categories": "bought from {distinct_categories:.0f} categories",
    "return_orders": "{return_orders:.0f} returns",
    "return_rate": "returned {return_rate:.0%} of spend",
    "discount_share": "{discount_share:.0%} of purchases discounted",
    "active_months": "ordered in {active_months:.0f} different months",
    "active_month_share": "ordered in {active_month_share:.0%} of their months as a customer",
    "active_weeks_180d": "ordered in {active_weeks_180d:.0f} weeks of the last 180 days",
    "orders_ly_next90d": "{orders_ly_next90d:.0f} orders in the same season last year",
    "orders_ly_next30d": "{orders_ly_next30d:.0f} orders in the same month last year",
    "season_share": "{season_share:.0%} of their orders in the calendar months of the next 90 days",
    "q4_share": "{q4_share:.0%} of orders in October-December",
    "weekend_share": "{weekend_share:.0%} of orders at weekends",
    "hour_mean": "usually orders around {hour_mean:.0f}h",
    "country_share": "their country has {country_share:.0%} of the shop's customers",
    "bgnbd_p_alive": "purchase pattern suggests {bgnbd_p_alive:.0%} chance still active",
    # a gap needs two order days: a missing one says the customer ordered on one day only
    "gap_ratio:missing": ONE_DAY,
    "gap_mean:missing": ONE_DAY,
    "gap_last:missing": ONE_DAY,
    "default": "purchase history pattern",
}


#: The inputs of each baseline score, whose Shapley values are its reason contributions:
#: BG/NBD reads repeat purchase days (x), recency and tenure (T; span t_x = T - recency).
BASELINE_PLAYERS: dict[str, tuple[str, ...]] = {
    "baseline-recency": ("recency_days",),
    "baseline-frequency": ("n_orders",),
    "baseline-bgnbd": ("repeat_days", "recency_days", "tenure_days"),
}
#: How many reference customers a baseline keeps (:meth:`CustomerArtifact.set_reference`).
REFERENCE_SIZE = 16


class UnknownCustomerError(KeyError):
    """A customer id that is not in the score table."""


# ---------------------------------------------------------------- BG/NBD and Gamma-Gamma formulas
def bgnbd_log_a0(
    params: dict[str, float], x: np.ndarray, t_x: np.ndarray, T: np.ndarray
) -> np.ndarray:
    """log of the ratio a/(b+x-1) ((alpha+T)/(alpha+t_x))^(r+x) (only where x > 0)."""
    r, alpha, a, b = params["r"], params["alpha"], params["a"], params["b"]
    with np.errstate(divide="ignore", invalid="ignore"):
        out = (
            np.log(a)
            - np.log(np.maximum(b + x - 1, 1e-300))
            + (r + x) * (np.log(alpha + T) - np.log(alpha + t_x))
        )
    return np.where(x > 0, out, -np.inf)


def bgnbd_p_alive(
    params: dict[str, float], x: np.ndarray, t_x: np.ndarray, T: np.ndarray
) -> np.ndarray:
    """P(alive at T | x repeat purchases, last at t_x, observed for T) under BG/NBD."""
    return np.asarray(expit(-bgnbd_log_a0(params, x, t_x, T)))


def bgnbd_p_no_purchase(
    params: dict[str, float], x: np.ndarray, t_x: np.ndarray, T: np.ndarray, horizon: float
) -> np.ndarray:
    """P(no purchase in (T, T + horizon]) = 1 - P(alive) + P(alive) ((a+T)/(a+T+h))^(r+x)."""
    r, alpha = params["r"], params["alpha"]
    alive = bgnbd_p_alive(params, x, t_x, T)
    none_if_alive = np.exp((r + x) * (np.log(alpha + T) - np.log(alpha + T + horizon)))
    return np.asarray(1.0 - alive + alive * none_if_alive)


def bgnbd_expected_purchases(
    params: dict[str, float], x: np.ndarray, t_x: np.ndarray, T: np.ndarray, horizon: float
) -> np.ndarray:
    """E[number of purchases in (T, T + horizon] | x, t_x, T] under BG/NBD (Fader et al. 2005)."""
    r, alpha, a, b = params["r"], params["alpha"], params["a"], params["b"]
    z = horizon / (alpha + T + horizon)
    hyp = hyp2f1(r + x, b + x, a + b + x - 1, z)
    first = (a + b + x - 1) / (a - 1)
    second = 1 - np.exp((r + x) * (np.log(alpha + T) - np.log(alpha + T + horizon))) * hyp
    alive = bgnbd_p_alive(params, x, t_x, T)
    return np.asarray(np.clip(first * second * alive, 0, None))


def net_order_value(monetary_mean: np.ndarray, return_rate: np.ndarray | None) -> np.ndarray:
    """Mean order value net of returns (``monetary_mean x (1 - return_rate)``, at least 0): what
    Gamma-Gamma models, so that a customer who returns what they buy is not worth their orders."""
    m = np.asarray(monetary_mean, dtype=np.float64)
    if return_rate is None:
        return m
    kept = 1.0 - np.nan_to_num(np.asarray(return_rate, dtype=np.float64), nan=0.0)
    return m * np.clip(kept, 0.0, 1.0)


def gamma_gamma_mean(params: dict[str, float], x: np.ndarray, mean_value: np.ndarray) -> np.ndarray:
    """E[spend per purchase | x purchases with mean value m] under Gamma-Gamma (p, q, v)."""
    p, q, v = params["p"], params["q"], params["v"]
    x = np.asarray(x, dtype=np.float64)
    m = np.nan_to_num(np.asarray(mean_value, dtype=np.float64))
    population = p * v / (q - 1) if q > 1 else float(np.nanmean(m))
    with np.errstate(divide="ignore", invalid="ignore"):
        cond = (q - 1) / (p * x + q - 1) * population + (p * x) / (p * x + q - 1) * m
    return np.where(x > 0, cond, population)


def gamma_gamma_loglik(params: np.ndarray, x: np.ndarray, m: np.ndarray) -> float:
    """Gamma-Gamma log-likelihood of mean transaction values ``m`` over ``x`` transactions."""
    p, q, v = params
    out = (
        gammaln(p * x + q)
        - gammaln(p * x)
        - gammaln(q)
        + q * np.log(v)
        + (p * x - 1) * np.log(m)
        + p * x * np.log(x)
        - (p * x + q) * np.log(x * m + v)
    )
    return float(np.sum(out))


def bgnbd_loglik(
    params: np.ndarray, x: np.ndarray, t_x: np.ndarray, T: np.ndarray, weights: np.ndarray
) -> float:
    """BG/NBD log-likelihood (Fader, Hardie & Lee 2005) with gammaln/betaln."""
    r, alpha, a, b = params
    common = gammaln(r + x) - gammaln(r) + r * np.log(alpha)
    term1 = betaln(a, b + x) - betaln(a, b) - (r + x) * np.log(alpha + T)
    with np.errstate(divide="ignore", invalid="ignore"):
        term2 = np.where(
            x > 0,
            betaln(a + 1, np.maximum(b + x - 1, 1e-12))
            - betaln(a, b)
            - (r + x) * np.log(alpha + t_x),
            -np.inf,
        )
    return float(np.sum(weights * (common + np.logaddexp(term1, term2))))


# ---------------------------------------------------------------- BG/NBD blend
def blend_stats(lgb_raw: np.ndarray, bg_raw: np.ndarray, weight: float) -> dict[str, float]:
    """The blend of :attr:`CustomerArtifact.blend`: ``weight`` and both scores' mean and std."""
    return {
        "weight": float(weight),
        "lgb_mean": float(np.mean(lgb_raw)),
        "lgb_std": float(np.std(lgb_raw)) or 1.0,
        "bg_mean": float(np.mean(bg_raw)),
        "bg_std": float(np.std(bg_raw)) or 1.0,
    }


def blend_scores(lgb_raw: np.ndarray, bg_raw: np.ndarray, blend: dict[str, float]) -> np.ndarray:
    """(1 - w) z(LightGBM log-odds) + w z(BG/NBD log-odds), standardised with ``blend``'s stats."""
    w = blend["weight"]
    return np.asarray(
        (1 - w) * (lgb_raw - blend["lgb_mean"]) / blend["lgb_std"]
        + w * (bg_raw - blend["bg_mean"]) / blend["bg_std"]
    )


# ---------------------------------------------------------------- calibration
@dataclass
class Calibration:
    """Maps a raw score to a probability: ``platt`` (sigmoid(a s + b)), ``isotonic`` or ``none``."""

    method: str = "none"
    a: float = 1.0
    b: float = 0.0
    x: np.ndarray = field(default_factory=lambda: np.zeros(0))
    y: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        raw = np.asarray(raw, dtype=np.float64)
        if self.method == "platt":
            return np.asarray(expit(self.a * raw + self.b))
        if self.method == "isotonic":
            return np.interp(raw, self.x, self.y)
        if self.method == "none":
            return np.asarray(expit(raw))
        raise ValueError(f"unknown calibration method {self.method!r}")


def _jsonable(value: object) -> object:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


# ---------------------------------------------------------------- the artifact
@dataclass
class CustomerArtifact:
    """A fitted churn / repurchase / value model that serving can load and run."""

    task: str
    kind: str
    feature_names: list[str]
    horizon_days: int
    as_of: str
    booster: lgb.Booster | None = None
    calibration: Calibration = field(default_factory=Calibration)
    btyd: dict[str, float] = field(default_factory=dict)
    scores: pd.DataFrame | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    phrases: dict[str, str] = field(default_factory=lambda: dict(PHRASES))
    notes: list[str] = field(default_factory=list)
    #: optional BG/NBD blend of a ``lightgbm`` kind: ``weight`` w and the standardisation of both
    #: scores at fitting time (``lgb_mean``, ``lgb_std``, ``bg_mean``, ``bg_std``); the raw score
    #: is then (1 - w) z(LightGBM log-odds) + w z(BG/NBD log-odds), using the ``btyd`` parameters
    blend: dict[str, float] = field(default_factory=dict)
    #: the reference customers of a baseline's reason codes: each input's values for
    #: :data:`REFERENCE_SIZE` customers at evenly spaced quantiles of the score at fitting time
    #: (:meth:`set_reference`); empty for artifacts saved before it was stored, whose baseline
    #: reasons then attribute the whole raw score (the old behaviour)
    reference: dict[str, list[float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"unknown task {self.task!r}; expected one of {TASKS}")
        if self.kind not in KINDS:
            raise ValueError(f"unknown kind {self.kind!r}; expected one of {KINDS}")
        if self.kind.startswith("lightgbm") and self.booster is None:
            raise ValueError(f"kind {self.kind!r} needs a LightGBM booster")

    # ---- prediction
    def _column(self, features: np.ndarray, name: str) -> np.ndarray:
        return np.asarray(features[:, self.feature_names.index(name)], dtype=np.float64)

    def _check(self, features: np.ndarray) -> np.ndarray:
        features = np.asarray(features, dtype=np.float64)
        if features.ndim != 2 or features.shape[1] != len(self.feature_names):
            raise ValueError(
                f"features must be a 2-D array with {len(self.feature_names)} columns "
                f"({', '.join(self.feature_names[:4])}, ...), got shape {features.shape}"
            )
        return features

    def _btyd_inputs(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """x, t_x, T clipped to their valid ranges (0 <= t_x <= T, x >= 0)."""
        x = np.clip(np.nan_to_num(self._column(features, "repeat_days")), 0, None)
        T = np.clip(np.nan_to_num(self._column(features, "tenure_days")), 0, None)
        t_x = np.clip(np.nan_to_num(self._column(features, "span_days")), 0, None)
        return x, np.minimum(t_x, T), np.maximum(T, t_x)

    def raw_score(self, features: np.ndarray) -> np.ndarray:
        """The uncalibrated score (higher = more likely positive; log-odds for LightGBM)."""
        features = self._check(features)
        sign = 1.0 if self.task == "churn" else -1.0
        if self.kind in ("lightgbm", "lightgbm-rfm"):
            assert self.booster is not None
            raw = np.asarray(self.booster.predict(features, raw_score=True), dtype=np.float64)
            if self.blend:
                raw = blend_scores(raw, self._bgnbd_logit(features), self.blend)
            return raw
        if self.kind == "baseline-recency":
            return sign * np.log1p(self._column(features, "recency_days"))
        if self.kind == "baseline-frequency":
            return -sign * np.log1p(self._column(features, "n_orders"))
        if self.kind in ("baseline-bgnbd", "bgnbd-gammagamma"):
            return self._bgnbd_logit(features)
        raise ValueError(f"unknown kind {self.kind!r}")

    def _bgnbd_logit(self, features: np.ndarray) -> np.ndarray:
        """BG/NBD log-odds of the task's event (churn: no purchase in the window)."""
        x, t_x, T = self._btyd_inputs(features)
        p0 = bgnbd_p_no_purchase(self.btyd, x, t_x, T, self.horizon_days)
        p = p0 if self.task == "churn" else 1 - p0
        return np.asarray(logit(np.clip(p, 1e-9, 1 - 1e-9)))

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        """Calibrated P(churn) or P(repurchase) per row of ``features`` (columns = feature_names)."""
        if self.task == "value":
            raise ValueError("a value model predicts spend: use predict()")
        return np.clip(self.calibration(self.raw_score(features)), 0.0, 1.0)

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Expected spend over the horizon (value, in cents: a dormant customer's is 0, not
        4e-22) or the probability (churn, repurchase)."""
        if self.task != "value":
            return self.predict_proba(features)
        features = self._check(features)
        if self.kind == "bgnbd-gammagamma":
            x, t_x, T = self._btyd_inputs(features)
            n = bgnbd_expected_purchases(self.btyd, x, t_x, T, self.horizon_days)
            rate = (
                self._column(features, "return_rate")
                if "return_rate" in self.feature_names
                else None
            )
            m = gamma_gamma_mean(
                self.btyd, x, net_order_value(self._column(features, "monetary_mean"), rate)
            )
            value = np.asarray(n * m, dtype=np.float64)
        else:
            assert self.booster is not None
            value = np.asarray(self.booster.predict(features), dtype=np.float64)
        return np.round(np.clip(value, 0.0, None), 2)

    # ---- reasons
    def contributions(self, features: np.ndarray) -> np.ndarray:
        """Per-feature contributions to the raw score, relative to a typical customer.

        LightGBM: ``pred_contrib`` (relative to the average prediction; last column dropped).
        Baselines with a :attr:`reference`: the exact Shapley values of their inputs
        (:data:`BASELINE_PLAYERS`) between each reference customer and this one, averaged, so
        they add up to the raw score less the population's mean raw score and a positive one is
        an input that raises the score above the average customer's (a baseline's raw score
        itself is not centred: BG/NBD log-odds, log days, log orders). Without a reference (artifacts saved before it
        was stored) a baseline attributes its whole raw score to its inputs in equal parts.
        """
        features = self._check(features)
        if self.booster is not None:
            contrib = np.asarray(self.booster.predict(features, pred_contrib=True))[:, :-1]
            if self.blend:  # scale to the blended score; the BG/NBD part goes to its inputs
                b, w = self.blend, self.blend["weight"]
                contrib = contrib * (1 - w) / b["lgb_std"]
                bg = w * (self._bgnbd_logit(features) - b["bg_mean"]) / b["bg_std"]
                for name in ("recency_days", "repeat_days"):
                    if name in self.feature_names:
                        contrib[:, self.feature_names.index(name)] += bg / 2
            return contrib
        if self.task != "value" and self._has_reference():
            return self._shapley(features)
        out = np.zeros_like(features)
        used = {
            "baseline-recency": ["recency_days"],
            "baseline-frequency": ["n_orders"],
            "baseline-bgnbd": ["recency_days", "repeat_days"],
            "bgnbd-gammagamma": ["repeat_days", "monetary_mean"],
        }[self.kind]
        raw = self.raw_score(features) if self.task != "value" else np.ones(len(features))
        for name in used:
            if name in self.feature_names:
                out[:, self.feature_names.index(name)] = raw / len(used)
        return out

    def _players(self) -> list[str]:
        return [p for p in BASELINE_PLAYERS.get(self.kind, ()) if p in self.feature_names]

    def _has_reference(self) -> bool:
        players = self._players()
        return bool(players) and all(self.reference.get(p) for p in players)

    def set_reference(self, features: np.ndarray, size: int = REFERENCE_SIZE) -> None:
        """Store the reference customers of a baseline's reasons: ``size`` customers of
        ``features`` (the population scored at fitting time) at evenly spaced quantiles of the
        raw score, so their mean score is the population's. No-op for LightGBM kinds, whose
        contributions are already relative to the average prediction."""
        features = self._check(features)
        if self.booster is not None or not len(features) or self.task == "value":
            return
        order = np.argsort(self.raw_score(features), kind="stable")
        rows = order[((np.arange(size) + 0.5) / size * len(order)).astype(np.int64)]
        self.reference = {p: self._column(features, p)[rows].tolist() for p in self._players()}

    def _with_inputs(self, features: np.ndarray, inputs: dict[str, np.ndarray]) -> np.ndarray:
        """``features`` with the baseline inputs set to ``inputs``. For BG/NBD the span
        (first to last order) follows recency and tenure: span = tenure - recency, less the
        customer's own rounding offset (so the customer's own inputs give back its row)."""
        out = features.copy()
        for name, values in inputs.items():
            out[:, self.feature_names.index(name)] = values
        if self.kind == "baseline-bgnbd":
            col = self.feature_names.index
            rec, ten, span = (
                features[:, col("recency_days")],
                features[:, col("tenure_days")],
                features[:, col("span_days")],
            )
            offset = np.nan_to_num(ten - rec - span)
            new_t = out[:, col("tenure_days")]
            new_span = new_t - out[:, col("recency_days")] - offset
            out[:, col("span_days")] = np.clip(new_span, 0.0, np.maximum(new_t, 0.0))
        return out

    def _shapley(self, features: np.ndarray) -> np.ndarray:
        """Exact Shapley values of the baseline's inputs (at most 3: 8 score evaluations per
        reference customer), averaged over the reference customers: they add up to the row's
        raw score less the reference customers' mean raw score."""
        players = self._players()
        n_p = len(players)
        own = {p: self._column(features, p) for p in players}
        refs = {p: np.asarray(self.reference[p], dtype=np.float64) for p in players}
        n_ref = min(len(v) for v in refs.values())
        weights = {
            size: math.factorial(size) * math.factorial(n_p - size - 1) / math.factorial(n_p)
            for size in range(n_p)
        }
        out = np.zeros_like(features)
        for b in range(n_ref):
            value: dict[frozenset[str], np.ndarray] = {}
            for mask in range(1 << n_p):
                subset = frozenset(p for i, p in enumerate(players) if mask >> i & 1)
                inputs = {
                    p: own[p] if p in subset else np.full(len(features), refs[p][b])
                    for p in players
                }
                value[subset] = self.raw_score(self._with_inputs(features, inputs))
            for p in players:
                others = [q for q in players if q != p]
                phi = np.zeros(len(features))
                for mask in range(1 << (n_p - 1)):
                    subset = frozenset(q for k, q in enumerate(others) if mask >> k & 1)
                    phi += weights[len(subset)] * (value[subset | {p}] - value[subset])
                out[:, self.feature_names.index(p)] += np.nan_to_num(phi) / n_ref
        if (
            self.kind == "baseline-bgnbd"
            and self.task == "churn"
            and "gap_ratio" in self.feature_names
        ):
            # a repeat buyer's repeat orders raise P(churn) only through the silence since the
            # last one, long for their own ordering rate: said as "no order for 6.9x the usual
            # gap", not "ordered again on 4 days" (true, but no reason to leave); within the
            # usual gap (the reference customers' long silence made x look risky) it is no reason
            j, g = self.feature_names.index("repeat_days"), self.feature_names.index("gap_ratio")
            up = (own["repeat_days"] > 0) & (out[:, j] > 0)
            overdue = up & (np.nan_to_num(features[:, g]) > 1.0)
            out[overdue, g] += out[overdue, j]
            out[up, j] = 0.0
        return out

    def reasons(self, features: np.ndarray, top_k: int = 3) -> list[list[str]]:
        """Up to ``top_k`` plain phrases per row: the features pushing the score up the most."""
        slots, keep = self._reason_slots(features, top_k)
        return [row[k].tolist() for row, k in zip(slots, keep, strict=True)]

    def reason_text(self, features: np.ndarray, top_k: int = 3, sep: str = "; ") -> np.ndarray:
        """:meth:`reasons` of every row joined with ``sep`` (an object array of strings)."""
        slots, keep = self._reason_slots(features, top_k)
        out = np.full(len(slots), "", dtype=object)
        for r in range(slots.shape[1]):
            first = out == ""
            add = keep[:, r]
            out[add & first] = slots[add & first, r]
            out[add & ~first] = out[add & ~first] + sep + slots[add & ~first, r]
        return out

    def _reason_slots(self, features: np.ndarray, top_k: int) -> tuple[np.ndarray, np.ndarray]:
        """The phrases of each row's largest positive contributions, slot by slot (an object
        array, rows x ``3 * top_k`` slots, "" where not needed) and which of them are its reasons
        (the first ``top_k`` that state distinct facts, :func:`fact_of`). A slot is formatted only for the rows that still
        need a reason, and each feature's phrase once per distinct combination of the values it
        reads."""
        features = self._check(features)
        contrib = self.contributions(features)
        order = np.argsort(-contrib, axis=1, kind="stable")[:, : 3 * top_k]
        positive = np.take_along_axis(contrib, order, axis=1) > 0
        slots = np.full(order.shape, "", dtype=object)
        facts = np.full(order.shape, "", dtype=object)
        keep = np.zeros(order.shape, dtype=bool)
        taken = np.zeros(len(order), dtype=np.int64)
        for r in range(order.shape[1]):
            need = positive[:, r] & (taken < top_k)  # contributions are sorted: monotone
            if not need.any():
                break
            for j in np.unique(order[need, r]):
                rows = need & (order[:, r] == j)
                slots[rows, r] = self._phrases_of(int(j), features[rows])
            facts[need, r] = [fact_of(t) for t in slots[need, r]]
            new = need.copy()
            for s in range(r):  # two features can state the same fact
                new &= facts[:, r] != facts[:, s]
            keep[:, r] = new
            taken += new
        return slots, keep

    def _phrases_of(self, j: int, rows: np.ndarray) -> np.ndarray:
        """The phrase of feature ``j`` for each of ``rows`` (formatted once per distinct value
        combination of the columns its template reads)."""
        feature = self.feature_names[j]
        template = self.phrases.get(feature, self.phrases.get("default", "purchase history"))
        reads = [k for k in self.feature_names if "{" + k in template]
        for field_name, sources in DERIVED_FIELDS.items():
            if "{" + field_name in template:
                reads += [k for k in sources if k in self.feature_names and k not in reads]
        idx = [self.feature_names.index(k) for k in reads]
        values = rows[:, idx] if idx else np.zeros((len(rows), 0))
        if not len(values):
            return np.empty(0, dtype=object)
        uniq, inverse = np.unique(values, axis=0, return_inverse=True)
        names = [self.feature_names[i] for i in idx]
        texts = [self.phrase(feature, dict(zip(names, u.tolist(), strict=True))) for u in uniq]
        return np.asarray(texts, dtype=object)[np.asarray(inverse).reshape(-1)]

    def phrase(self, feature: str, values: dict[str, float]) -> str:
        """The phrase of one feature for one customer's ``values`` (never raises)."""
        template = self.phrases.get(feature, self.phrases.get("default", "purchase history"))
        change = values.get("spend_change_90d", float("nan"))
        filled: dict[str, object] = dict(values)
        filled["pct_change"] = abs(change) * 100 if change == change else 0.0
        filled["up_down"] = "down" if change < 0 else "up"
        repeat = values.get("repeat_days", float("nan"))
        filled["repeat_text"] = (
            self.phrases.get("default", "purchase history pattern")
            if math.isnan(repeat)
            else "never ordered again after the first order"
            if repeat == 0
            else f"ordered again on {repeat:.0f} days after the first"
        )
        filled["item_buyers"] = math.expm1(values.get("item_popularity", float("nan")))
        filled["activity"] = "little" if self.task == "churn" else "strong"
        if any(
            isinstance(v, float) and math.isnan(v) for k, v in filled.items() if "{" + k in template
        ):
            return self.phrases.get(
                f"{feature}:missing", self.phrases.get("default", "purchase history pattern")
            )
        try:
            return tidy_phrase(template.format(**filled))
        except (KeyError, ValueError, IndexError):
            return self.phrases.get("default", "purchase history pattern")

    # ---- score table
    def score(self, customer_id: str) -> dict[str, Any]:
        """The precomputed row of one customer (raises :class:`UnknownCustomerError`)."""
        if self.scores is None:
            raise ValueError("this artifact has no score table")
        rows = self.scores.loc[self.scores["customer_id"] == str(customer_id)]
        if rows.empty:
            raise UnknownCustomerError(f"unknown customer {customer_id!r} (not in the score table)")
        return {str(k): v for k, v in rows.iloc[0].to_dict().items()}

    # ---- persistence
    def save(self, folder: str | Path) -> Path:
        """Write the artifact folder (no pickle anywhere)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        if self.booster is not None:
            (folder / MODEL).write_text(self.booster.model_to_string())
        cal = self.calibration
        if cal.method == "isotonic":
            np.savez(folder / CALIBRATION, x=cal.x, y=cal.y)
        if self.scores is not None:
            self.scores.to_parquet(folder / SCORES, index=False)
        meta = {
            "kind": self.kind,
            "task": self.task,
            "horizon_days": self.horizon_days,
            "as_of": self.as_of,
            "feature_names": self.feature_names,
            "calibration": {"method": cal.method, "a": cal.a, "b": cal.b},
            "btyd": self.btyd,
            "blend": self.blend,
            "reference": self.reference,
            "metrics": self.metrics,
            "phrases": self.phrases,
            "notes": self.notes,
            "versions": library_versions(),
        }
        (folder / META).write_text(json.dumps(meta, indent=2, default=_jsonable) + "\n")
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> CustomerArtifact:
        """Read an artifact folder written by :meth:`save`."""
        folder = Path(folder)
        if not (folder / META).exists():
            raise FileNotFoundError(f"{folder}: no {META}; not a customer model artifact")
        meta = json.loads((folder / META).read_text())
        booster = (
            lgb.Booster(model_str=(folder / MODEL).read_text())
            if (folder / MODEL).exists()
            else None
        )
        c = meta["calibration"]
        cal = Calibration(method=c["method"], a=c.get("a", 1.0), b=c.get("b", 0.0))
        if cal.method == "isotonic":
            with np.load(folder / CALIBRATION, allow_pickle=False) as z:
                cal.x, cal.y = z["x"], z["y"]
        scores = pd.read_parquet(folder / SCORES) if (folder / SCORES).exists() else None
        return cls(
            task=meta["task"],
            kind=meta["kind"],
            feature_names=list(meta["feature_names"]),
            horizon_days=int(meta["horizon_days"]),
            as_of=meta["as_of"],
            booster=booster,
            calibration=cal,
            btyd={k: float(v) for k, v in meta.get("btyd", {}).items()},
            blend={k: float(v) for k, v in meta.get("blend", {}).items()},
            reference={k: [float(x) for x in v] for k, v in (meta.get("reference") or {}).items()},
            scores=scores,
            metrics=meta.get("metrics", {}),
            phrases=dict(meta.get("phrases", PHRASES)),
            notes=list(meta.get("notes", [])),
        )


def value_at_risk(churn: pd.DataFrame, value: pd.DataFrame) -> pd.DataFrame:
    """Join churn and value score tables: value_at_risk = P(churn) x expected value."""
    out = churn.merge(value[["customer_id", "value"]], on="customer_id", how="left")
    out["value_at_risk"] = out["churn_proba"] * out["value"].fillna(0.0)
    return out
