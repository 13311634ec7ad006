"""The demand forecast: a global LightGBM quantile model combined with simple methods.

How a forecast is made, at an origin week ``t`` (the last complete week before ``as_of``):

1. Components, each a (P10, P50, P90) forecast per item and week ahead:
   - ``lgb``: global direct LightGBM quantile models (one per quantile, horizon as a feature) on
     targets divided by the item's recent level, so items of every size pool in one model.
     Features: scaled lags and rolling statistics, the share of weeks with sales, weeks since the
     last sale, age, the item's last-December ratio (shrunk to its category), the category and
     shop-wide recent trend, relative price, horizon and the target week's distance to Christmas.
   - ``emp``: empirical quantiles of the last 12 weeks.
   - ``mean4`` (mean of the last 4 weeks) and ``tsb`` (Teunter-Syntetos-Babai, 0.1/0.1) as
     point components.
2. A seasonal ramp multiplies every component: ``exp(gamma * phi_h * r_i)`` where ``r_i`` is the
   item's log ratio of its last-December level to its recent level (shrunk toward its category)
   and ``phi_h`` the share of the way from the origin to mid-December the target week has gone
   (log-linear interpolation toward last December's level), times a shop-wide trend
   ``g ** (theta * min(h, 4) / 4)`` with ``g`` the recent 4-week over 12-week ratio.
3. Weights (a simplex grid, per quantile and for the point forecast) and the ramp's
   ``gamma``/``theta`` are chosen on validation origins strictly before the fitting origin
   (8, 12 and 16 weeks earlier; their windows end at the origin), each refitted on its own past.
   Quantiles minimise pinball loss; the point forecast minimises MASE with a penalty on
   ``|bias| > 0.15`` (the planner needs honest totals, not only a good median).

The fitted state is a :class:`shopml.artifacts.demand.DemandArtifact`: the forecast table for the
next ``horizon`` weeks, the boosters (text), the recent history and the weights.
"""

from __future__ import annotations

import itertools
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Self

import numpy as np
import pandas as pd

from features.demand import WeeklyDemand, calendar_features, weekly_demand
from features.schema import CATEGORY, ITEM_ID, ITEM_NAME
from shopml.artifacts.demand import MAX_HORIZON, DemandArtifact
from training.base import check_fitted

log = logging.getLogger(__name__)

QUANTILES = (0.1, 0.5, 0.9)
HISTORY_WEEKS = 26  # weeks of history kept in the artifact


# ------------------------------------------------------------------------------ simple methods
def tsb(hist: np.ndarray, alpha_d: float = 0.1, alpha_p: float = 0.1) -> np.ndarray:
    """Teunter-Syntetos-Babai forecast per row (demand size x probability of demand)."""
    nz = hist > 0
    p = nz.mean(axis=1)
    first = np.where(nz.any(axis=1), hist[np.arange(len(hist)), nz.argmax(axis=1)], 0.0)
    z = first.astype(float)
    for k in range(hist.shape[1]):
        y = hist[:, k]
        pos = y > 0
        p = np.where(pos, p + alpha_p * (1 - p), p * (1 - alpha_p))
        z = np.where(pos, z + alpha_d * (y - z), z)
    return np.asarray(p * z)


def empirical(hist: np.ndarray, window: int = 12) -> np.ndarray:
    """Empirical P10/P50/P90 of the last ``window`` weeks, shape (3, n)."""
    return np.asarray(np.quantile(hist[:, -window:], QUANTILES, axis=1))


# ------------------------------------------------------------------------------------ features
@dataclass(frozen=True)
class ItemStatics:
    """Per-item quantities that do not depend on the origin: category codes, December ratio."""

    category: np.ndarray  # int codes
    first_week: np.ndarray  # index of first week with a sale (len(weeks) if none)


def december_weeks(weeks: pd.DatetimeIndex, t: int) -> np.ndarray:
    """Indices (<= t) of weeks ending 1-24 December of the last December before week ``t``."""
    w = weeks[: t + 1]
    is_dec = (w.month == 12) & (w.day <= 24)
    if not is_dec.any():
        return np.array([], dtype=int)
    year = w[is_dec].year.max()
    return np.flatnonzero(is_dec & (w.year == year))


def december_ratio(
    units: np.ndarray, weeks: pd.DatetimeIndex, t: int, statics: ItemStatics, level: np.ndarray
) -> np.ndarray:
    """Log ratio of last December's weekly level to the off-season level after it, shrunk.

    The off-season reference is the weeks ending 8 January to 31 March that follow that December
    (``level`` when the history has fewer than 4 of them): the ratio measures how much more an
    item sells before Christmas than in a quiet season, so applying it to today's level carries
    the shop's growth since then. Items first sold after that December get their category's
    ratio (shrunk toward the overall one); 0 without a December in the history.
    """
    dec = december_weeks(weeks, t)
    n = units.shape[0]
    if len(dec) < 2:
        return np.zeros(n)
    d = units[:, dec].mean(axis=1)
    year = weeks[dec[-1]].year + 1
    w = weeks[: t + 1]
    off = np.flatnonzero(
        (w >= pd.Timestamp(year=year, month=1, day=8))
        & (w <= pd.Timestamp(year=year, month=3, day=31))
    )
    ref = units[:, off].mean(axis=1) if len(off) >= 4 else level
    existed = statics.first_week <= dec[-1]
    raw = np.log((d + 1.0) / (ref + 1.0))
    weight = (d + ref) / (d + ref + 20.0)  # little volume -> lean on the category
    cats = statics.category
    ncat = int(cats.max()) + 1 if n else 1
    num = np.bincount(cats[existed], weights=raw[existed], minlength=ncat)
    den = np.bincount(cats[existed], minlength=ncat)
    overall = float(raw[existed].mean()) if existed.any() else 0.0
    cat_ratio = (num + 5.0 * overall) / (den + 5.0)
    prior = cat_ratio[cats]
    return np.asarray(np.where(existed, weight * raw + (1 - weight) * prior, prior))


def item_level(hist: np.ndarray) -> np.ndarray:
    """The scale targets are divided by: recent level (last 12 and 26 weeks), floored."""
    m12 = hist[:, -12:].mean(axis=1)
    m26 = hist[:, -26:].mean(axis=1)
    return np.asarray(np.maximum(0.5 * m12 + 0.5 * m26, 0.1))


def ramp_phi(origin: pd.Timestamp, horizon: int) -> np.ndarray:
    """Share of the way from the origin week to mid-December for weeks 1..horizon (0..1)."""
    target = pd.Timestamp(year=origin.year, month=12, day=15)
    if target <= origin:
        target = pd.Timestamp(year=origin.year + 1, month=12, day=15)
    span = (target - origin).days / 7.0
    return np.clip(np.arange(1, horizon + 1) / span, 0.0, 1.0)


FEATURES = [
    "h", "weeks_to_xmas", "log_level", "lag1", "lag2", "lag3", "lag4", "lag8", "lag12",
    "roll4", "roll8", "med12", "q90_12", "nz4", "nz12", "nz_all", "since_last", "age",
    "dec_ratio", "cat_trend", "shop_trend", "price_rel", "log_price", "category",
]  # fmt: skip


def origin_block(
    wd: WeeklyDemand, t: int, statics: ItemStatics, rows: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Origin-level features (n, f - 2), the item level and the December log ratio at week ``t``."""
    u = wd.units[:, : t + 1]
    level = item_level(u)
    dec = december_ratio(u, wd.weeks, t, statics, level)
    hist = u[rows]
    lv = level[rows]

    def lag(k: int) -> np.ndarray:
        return hist[:, -k] / lv if hist.shape[1] >= k else np.full(len(rows), np.nan)

    nz = hist > 0
    any_sale = nz.any(axis=1)
    last_sale = np.where(any_sale, hist.shape[1] - 1 - np.argmax(nz[:, ::-1], axis=1), -1)
    cats = statics.category
    ncat = int(cats.max()) + 1
    c4 = np.bincount(cats, weights=u[:, -4:].sum(axis=1), minlength=ncat)
    c12 = np.bincount(cats, weights=u[:, -12:].sum(axis=1), minlength=ncat)
    cat_trend = np.log((c4 * 3 + 4.0) / (c12 + 4.0))[cats[rows]]
    shop_trend = np.log(u[:, -4:].sum() * 3 / max(u[:, -12:].sum(), 1.0))
    price = wd.price[rows, t]
    recent = wd.price[rows, max(t - 11, 0) : t + 1]
    cnt = np.isfinite(recent).sum(axis=1)
    price12 = np.where(cnt > 0, np.nansum(recent, axis=1) / np.maximum(cnt, 1), np.nan)
    block = np.column_stack(
        [
            np.log(lv),
            lag(1), lag(2), lag(3), lag(4), lag(8), lag(12),
            hist[:, -4:].mean(axis=1) / lv,
            hist[:, -8:].mean(axis=1) / lv,
            np.median(hist[:, -12:], axis=1) / lv,
            np.quantile(hist[:, -12:], 0.9, axis=1) / lv,
            nz[:, -4:].mean(axis=1),
            nz[:, -12:].mean(axis=1),
            nz.sum(axis=1) / np.maximum(t + 1 - statics.first_week[rows], 1),
            np.where(any_sale, t - last_sale, 99),
            np.maximum(t - statics.first_week[rows], 0),
            dec[rows],
            cat_trend,
            np.full(len(rows), shop_trend),
            price / price12,
            np.log(price),
            cats[rows].astype(float),
        ]
    )  # fmt: skip
    return block, level[rows], dec[rows]


def expand(block: np.ndarray, origin: pd.Timestamp, horizon: int) -> np.ndarray:
    """Repeat origin features for h = 1..horizon (h-major order) and add horizon covariates."""
    weeks = pd.DatetimeIndex([origin + pd.Timedelta(days=7 * k) for k in range(1, horizon + 1)])
    to_xmas = calendar_features(weeks)["weeks_to_xmas"].to_numpy()
    n = block.shape[0]
    hcol = np.repeat(np.arange(1, horizon + 1, dtype=float), n)
    xcol = np.repeat(to_xmas, n)
    return np.column_stack([hcol, xcol, np.tile(block, (horizon, 1))])


# ------------------------------------------------------------------------------- LightGBM part
@dataclass
class LgbParams:
    """LightGBM settings of the quantile models."""

    num_rounds: int = 120
    learning_rate: float = 0.06
    num_leaves: int = 31
    min_data_in_leaf: int = 200
    feature_fraction: float = 0.8
    train_origins: int = 20
    origin_stride: int = 2
    num_threads: int = 1
    seed: int = 0

    def booster_params(self, alpha: float) -> dict[str, Any]:
        return {
            "objective": "quantile",
            "alpha": alpha,
            "learning_rate": self.learning_rate,
            "num_leaves": self.num_leaves,
            "min_data_in_leaf": self.min_data_in_leaf,
            "feature_fraction": self.feature_fraction,
            "bagging_fraction": 0.5,
            "max_bin": 63,
            "bagging_freq": 1,
            "num_threads": self.num_threads,
            "seed": self.seed,
            "deterministic": True,
            "verbose": -1,
        }


def fit_lgb(
    wd: WeeklyDemand,
    t: int,
    statics: ItemStatics,
    train_rows: np.ndarray,
    horizon: int,
    params: LgbParams,
) -> list[Any]:
    """Fit one quantile booster per quantile on origins before ``t`` (targets up to week ``t``)."""
    import lightgbm as lgb

    xs, ys = [], []
    first = max(12, t - params.train_origins - horizon + 1)
    for o in range(t - 1, first - 1, -params.origin_stride):
        h = min(horizon, t - o)
        block, level, _ = origin_block(wd, o, statics, train_rows)
        x = expand(block, wd.weeks[o], h)
        y = (wd.units[train_rows][:, o + 1 : o + 1 + h] / level[:, None]).T.reshape(-1)
        xs.append(x)
        ys.append(y)
    x, y = np.vstack(xs), np.concatenate(ys)
    data = lgb.Dataset(x, y, feature_name=FEATURES, categorical_feature=["category"])
    boosters = []
    for q in QUANTILES:
        boosters.append(lgb.train(params.booster_params(q), data, params.num_rounds))
    return boosters


def predict_lgb(boosters: list[Any], x: np.ndarray, level: np.ndarray, horizon: int) -> np.ndarray:
    """Quantile forecasts (3, n, h) in units, sorted along the quantile axis, >= 0."""
    n = len(level)
    out = np.stack([b.predict(x).reshape(horizon, n).T * level[:, None] for b in boosters])
    return np.asarray(np.maximum(np.sort(out, axis=0), 0.0))


# --------------------------------------------------------------------------------- combination
@dataclass
class Components:
    """Component forecasts at one origin: ``quant`` (c, 3, n, h), ``point`` (p, n, h), ramp inputs."""

    quant: np.ndarray
    point: np.ndarray
    dec: np.ndarray  # (n,)
    phi: np.ndarray  # (h,)
    shop_trend: float


QUANT_NAMES = ("lgb", "emp")
POINT_NAMES = ("lgb_p50", "emp_p50", "mean4", "tsb")


def components(
    wd: WeeklyDemand,
    t: int,
    statics: ItemStatics,
    rows: np.ndarray,
    boosters: list[Any],
    horizon: int,
) -> Components:
    """All component forecasts at origin index ``t`` for ``rows``."""
    block, level, dec = origin_block(wd, t, statics, rows)
    x = expand(block, wd.weeks[t], horizon)
    lgbq = predict_lgb(boosters, x, level, horizon)
    hist = wd.units[rows, : t + 1]
    emp = np.repeat(empirical(hist)[:, :, None], horizon, axis=2)
    flat = np.ones((1, horizon))
    mean4 = hist[:, -4:].mean(axis=1)[:, None] * flat
    tsb_f = tsb(hist)[:, None] * flat
    u = wd.units[:, : t + 1]
    shop_trend = float(np.log(u[:, -4:].sum() * 3 / max(u[:, -12:].sum(), 1.0)))
    return Components(
        quant=np.stack([lgbq, emp]),
        point=np.stack([lgbq[1], emp[1], mean4, tsb_f]),
        dec=dec,
        phi=ramp_phi(wd.weeks[t], horizon),
        shop_trend=shop_trend,
    )


def ramp(c: Components, gamma: float, theta: float) -> np.ndarray:
    """Multiplier (n, h): interpolation toward last December's level and the shop-wide trend."""
    h = len(c.phi)
    trend = np.exp(theta * c.shop_trend * np.minimum(np.arange(1, h + 1), 4) / 4.0)
    return np.asarray(np.exp(gamma * c.dec[:, None] * c.phi[None, :]) * trend[None, :])


def simplex(k: int, step: float) -> list[np.ndarray]:
    """All weight vectors of length ``k`` on a grid of ``step`` that sum to 1."""
    m = round(1 / step)
    return [np.array(c) / m for c in itertools.product(range(m + 1), repeat=k) if sum(c) == m]


@dataclass
class Combination:
    """Chosen ramp and weights (JSON-able)."""

    gamma: float
    theta: float
    quant_weights: list[list[float]]  # per quantile, over QUANT_NAMES + ("point",)
    point_weights: list[float]  # over POINT_NAMES
    scores: dict[str, float]


@dataclass
class Validation:
    """One validation origin: its components, truth and MASE scales."""

    comp: Components
    y: np.ndarray
    scale: np.ndarray


GAMMAS = (0.0, 0.25, 0.5, 0.75, 1.0)
THETAS = (0.0, 0.5, 1.0)
BIAS_SLACK = 0.15


def pinball(y: np.ndarray, f: np.ndarray, q: float) -> float:
    d = y - f
    return float(np.mean(np.maximum(q * d, (q - 1) * d)))


def choose_combination(vals: list[Validation]) -> Combination:
    """Grid search of ramp and weights on validation origins (each origin weighs the same)."""
    best: tuple[float, Combination] | None = None
    pw = simplex(len(POINT_NAMES), 0.1)
    qw = simplex(len(QUANT_NAMES) + 1, 0.1)
    for gamma, theta in itertools.product(GAMMAS, THETAS):
        mults = [ramp(v.comp, gamma, theta) for v in vals]
        pts = [v.comp.point * m[None] for v, m in zip(vals, mults, strict=True)]
        # point: MASE + penalty on |bias| beyond the slack
        p_best, p_w = np.inf, pw[0]
        for w in pw:
            loss = 0.0
            for v, p in zip(vals, pts, strict=True):
                f = np.tensordot(w, p, axes=1)
                ok = v.scale > 0
                mase = np.mean(np.abs(f - v.y)[ok].mean(axis=1) / v.scale[ok])
                bias = (f - v.y).sum() / max(v.y.sum(), 1.0)
                loss += mase + 2.0 * max(0.0, abs(bias) - BIAS_SLACK)
            if loss < p_best:
                p_best, p_w = loss, w
        point = [np.tensordot(p_w, p, axes=1) for p in pts]
        q_total, q_ws = 0.0, []
        for k, q in enumerate(QUANTILES):
            k_best, k_w = np.inf, qw[0]
            for w in qw:
                loss = 0.0
                for v, m, f_pt in zip(vals, mults, point, strict=True):
                    f = sum(w[c] * v.comp.quant[c, k] * m for c in range(len(QUANT_NAMES)))
                    f = f + w[-1] * f_pt
                    loss += pinball(v.y, f, q) / max(float(np.abs(v.y).mean()), 1e-9)
                if loss < k_best:
                    k_best, k_w = loss, w
            q_total += k_best
            q_ws.append(k_w)
        score = p_best / len(vals) + q_total / len(vals)
        comb = Combination(
            gamma,
            theta,
            [list(map(float, w)) for w in q_ws],
            list(map(float, p_w)),
            {"point_loss": p_best / len(vals), "quantile_loss": q_total / len(vals)},
        )
        log.debug("gamma=%s theta=%s score=%.4f", gamma, theta, score)
        if best is None or score < best[0]:
            best = (score, comb)
    assert best is not None
    return best[1]


def combine(c: Components, comb: Combination) -> tuple[np.ndarray, np.ndarray]:
    """Apply a combination: quantiles (3, n, h) sorted and >= 0, point (n, h) >= 0."""
    m = ramp(c, comb.gamma, comb.theta)
    point = np.tensordot(np.array(comb.point_weights), c.point, axes=1) * m
    qs = []
    for k in range(len(QUANTILES)):
        w = comb.quant_weights[k]
        f = sum(w[j] * c.quant[j, k] * m for j in range(len(QUANT_NAMES))) + w[-1] * point
        qs.append(f)
    quant = np.maximum(np.sort(np.stack(qs), axis=0), 0.0)
    return quant, np.maximum(point, 0.0)


# -------------------------------------------------------------------------------- the estimator
class DemandModel:
    """Weekly P10/P50/P90 and point demand forecasts per item (see the module docstring).

    ``fit(orders, as_of, items=None)`` uses order lines strictly before ``as_of``; the forecast
    starts with the week after the last complete week before ``as_of``.
    """

    kind: ClassVar[str] = "demand"

    def __init__(
        self,
        horizon: int = MAX_HORIZON,
        min_weeks: int = 10,
        val_offsets: tuple[int, ...] = (8, 12, 16),
        num_rounds: int = 120,
        learning_rate: float = 0.06,
        num_leaves: int = 31,
        min_data_in_leaf: int = 200,
        train_origins: int = 20,
        num_threads: int = 1,
        seed: int = 0,
    ) -> None:
        self.horizon = horizon
        self.min_weeks = min_weeks
        self.val_offsets = val_offsets
        self.num_rounds = num_rounds
        self.learning_rate = learning_rate
        self.num_leaves = num_leaves
        self.min_data_in_leaf = min_data_in_leaf
        self.train_origins = train_origins
        self.num_threads = num_threads
        self.seed = seed

    def _params(self) -> LgbParams:
        return LgbParams(
            num_rounds=self.num_rounds,
            learning_rate=self.learning_rate,
            num_leaves=self.num_leaves,
            min_data_in_leaf=self.min_data_in_leaf,
            train_origins=self.train_origins,
            num_threads=self.num_threads,
            seed=self.seed,
        )

    def _check(self) -> None:
        if not 1 <= int(self.horizon) <= MAX_HORIZON:
            raise ValueError(
                f"horizon must be between 1 and {MAX_HORIZON} weeks, got {self.horizon}"
            )
        if self.min_weeks < 1:
            raise ValueError(f"min_weeks must be >= 1, got {self.min_weeks}")
        if any(o < 1 for o in self.val_offsets):
            raise ValueError(f"val_offsets must be positive weeks, got {self.val_offsets}")

    def fit(
        self, orders: pd.DataFrame, as_of: pd.Timestamp | str, items: pd.DataFrame | None = None
    ) -> Self:
        """Fit on purchases strictly before ``as_of`` and precompute the forecast table."""
        self._check()
        started = time.perf_counter()
        as_of = pd.Timestamp(as_of)
        wd = weekly_demand(orders, as_of)
        t = len(wd.weeks) - 1
        if t < 13:
            raise ValueError(f"need at least 14 complete weeks before as_of, got {t + 1}")
        cat_names = _categories(wd.items, items)
        codes = pd.Index(sorted(set(cat_names)))
        nz = wd.units > 0
        statics = ItemStatics(
            category=codes.get_indexer(pd.Index(cat_names)).astype(np.int64),
            first_week=np.where(nz.any(axis=1), nz.argmax(axis=1), len(wd.weeks)),
        )
        params = self._params()
        h = self.horizon
        vals = []
        offsets = [o for o in sorted(set(self.val_offsets)) if t - o >= 13]
        val_boosters: list[Any] = []
        if offsets:
            # one validation fit at the earliest validation origin serves every validation origin:
            # it saw only data before all of them (no leakage; slightly conservative)
            o0 = t - offsets[-1]
            rows0 = np.flatnonzero(nz[:, : o0 + 1].sum(axis=1) >= self.min_weeks)
            if len(rows0):
                val_boosters = fit_lgb(wd, o0, statics, rows0, h, params)
        for off in offsets if val_boosters else []:
            o = t - off
            rows = np.flatnonzero(nz[:, : o + 1].sum(axis=1) >= self.min_weeks)
            if len(rows) == 0:
                continue
            hv = min(h, off)
            boosters = val_boosters
            comp = components(wd, o, statics, rows, boosters, hv)
            hist = wd.units[rows, : o + 1]
            scale = np.abs(np.diff(hist, axis=1)).mean(axis=1)
            vals.append(Validation(comp, wd.units[rows, o + 1 : o + 1 + hv], scale))
        if vals:
            comb = choose_combination(vals)
        else:
            log.warning("no validation origin fits in the history: equal weights, no ramp")
            comb = Combination(0.0, 0.0, [[0.5, 0.5, 0.0]] * 3, [0.25] * 4, {})
        train_rows = np.flatnonzero(nz.sum(axis=1) >= self.min_weeks)
        if len(train_rows) == 0:
            raise ValueError(f"no item has sales in >= {self.min_weeks} weeks before as_of")
        boosters = fit_lgb(wd, t, statics, train_rows, h, params)
        all_rows = np.flatnonzero(nz.any(axis=1))
        comp = components(wd, t, statics, all_rows, boosters, h)
        quant, point = combine(comp, comb)
        self.fit_seconds_ = time.perf_counter() - started
        self.combination_ = comb
        self.artifact_ = DemandArtifact.build(
            items=wd.items[all_rows],
            origin=wd.weeks[t],
            quantiles=quant,
            point=point,
            history=wd.units[all_rows, -HISTORY_WEEKS:],
            history_weeks=wd.weeks[-HISTORY_WEEKS:],
            price=wd.price[all_rows, t],
            category=np.asarray(cat_names)[all_rows],
            names=_names(wd.items[all_rows], items),
            boosters=[b.model_to_string() for b in boosters],
            meta={
                "as_of": str(as_of),
                "combination": comb.__dict__,
                "params": {k: v for k, v in vars(self).items() if not k.endswith("_")},
                "fit_seconds": self.fit_seconds_,
                "validation_origins": [str(wd.weeks[t - o].date()) for o in self.val_offsets],
                "features": FEATURES,
            },
        )
        log.info("demand model fitted in %.1f s: %s", self.fit_seconds_, comb)
        return self

    def forecast(self, item_ids: list[str] | pd.Index, horizon: int | None = None) -> pd.DataFrame:
        """Long table of weekly P10/P50/P90 and point forecasts (see ``DemandArtifact.forecast``)."""
        check_fitted(self, "artifact_")
        return self.artifact_.forecast(item_ids, self.horizon if horizon is None else horizon)

    def save(self, folder: Path) -> None:
        """Write the artifact folder (LightGBM text, npz, Parquet, JSON)."""
        check_fitted(self, "artifact_")
        self.artifact_.save(Path(folder))

    @classmethod
    def load(cls, folder: Path) -> Self:
        """A fitted model whose state is the saved artifact (no refitting possible without data)."""
        artifact = DemandArtifact.load(Path(folder))
        params: dict[str, Any] = dict(artifact.meta.get("params", {}))
        if "val_offsets" in params:
            params["val_offsets"] = tuple(params["val_offsets"])
        model = cls(**params)
        model.artifact_ = artifact
        return model


def _categories(item_ids: pd.Index, items: pd.DataFrame | None) -> list[str]:
    if items is None or CATEGORY not in items.columns:
        return ["all"] * len(item_ids)
    m = items.assign(_id=items[ITEM_ID].astype(str)).drop_duplicates("_id").set_index("_id")
    cat = m[CATEGORY].astype(str).reindex(item_ids.astype(str)).fillna("unknown")
    return [str(c) for c in cat]


def _names(item_ids: pd.Index, items: pd.DataFrame | None) -> np.ndarray:
    if items is None or ITEM_NAME not in items.columns:
        return np.array([""] * len(item_ids), dtype=object)
    m = items.assign(_id=items[ITEM_ID].astype(str)).drop_duplicates("_id").set_index("_id")
    return np.asarray(
        m[ITEM_NAME].astype(str).reindex(item_ids.astype(str)).fillna(""), dtype=object
    )
