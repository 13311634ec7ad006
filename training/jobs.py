"""One training job per model kind: backtest against baselines, then fit for serving.

A job's ``backtest`` refits the model as of ``as_of - window`` on the data before that date and
scores it, and every baseline, on ``[as_of - window, as_of)``; ``fit`` trains on everything
before ``as_of`` and saves the servable folder. The orchestration (:mod:`training.train`) logs
both to MLflow and applies the promotion gate.
"""

from __future__ import annotations

import logging
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from pydantic import TypeAdapter, ValidationError

from features.io import Dataset
from features.labels import churn_labels, repurchase_labels
from features.threads import ENV as THREADS_ENV
from features.threads import feature_threads
from shopml.artifacts.customers import value_at_risk
from training import plots

if TYPE_CHECKING:
    from distributed import Client

log = logging.getLogger(__name__)


def default_threads() -> int:
    """Threads for LightGBM/implicit: env SHOPML_THREADS (checked as the feature build checks
    it), else the machine's cores (max 8)."""
    if os.environ.get(THREADS_ENV, "").strip():
        return feature_threads()
    return min(8, os.cpu_count() or 1)


@dataclass
class Backtest:
    """Metrics of the candidate (``shopml``) and each baseline on one backtest window."""

    window: str
    metrics: dict[str, dict[str, float]]
    gate_metric: str
    higher_is_better: bool
    figures: dict[str, Figure] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def value(self) -> float:
        """The candidate's gate metric."""
        return float(self.metrics["shopml"][self.gate_metric])

    def best_baseline(self) -> tuple[str, float] | None:
        """The baseline with the best gate metric, if any."""
        others = {k: v[self.gate_metric] for k, v in self.metrics.items() if k != "shopml"}
        if not others:
            return None
        pick = max if self.higher_is_better else min
        name = pick(others, key=lambda k: others[k])
        return name, float(others[name])

    def beats_baselines(self) -> bool:
        """True when the candidate is at least as good as its best baseline."""
        best = self.best_baseline()
        if best is None:
            return True
        return self.value >= best[1] if self.higher_is_better else self.value <= best[1]


@dataclass
class Fitted:
    """A saved, servable model folder and what the registry should know about it."""

    folder: Path
    input_example: pd.DataFrame
    summary: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


class Job(Protocol):
    """The two steps every model kind provides."""

    kind: ClassVar[str]
    window_days: ClassVar[int]

    def backtest(self, ds: Dataset, as_of: pd.Timestamp, params: dict[str, Any]) -> Backtest: ...

    def fit(
        self, ds: Dataset, as_of: pd.Timestamp, params: dict[str, Any], folder: Path
    ) -> Fitted: ...


# ------------------------------------------------------------------------ customers
class _CustomerJob:
    """Churn or repurchase propensity: LightGBM on stacked snapshots vs RFM/BTYD baselines.

    Backtests and fits of one Dataset share one feature cache
    (:func:`training.snapshots.snapshots_for`; with a Dask client
    :func:`training.dask_models.cluster_snapshots_for`, computed on the cluster): no cutoff's
    user features are computed twice by churn, repurchase and value; above ``max_train_customers`` (a model parameter) they train on
    a fixed hash sample of customers (:mod:`training.snapshots`).
    """

    kind: ClassVar[str]
    window_days: ClassVar[int]
    label_name: ClassVar[str]
    #: Who the label's positives are, for plot labels ("share of ... found").
    positives: ClassVar[str] = "positives"

    def __init__(
        self,
        horizon_days: int | None = None,
        threads: int | None = None,
        client: Client | None = None,
    ) -> None:
        self.horizon_days = horizon_days or self.window_days
        self.threads = threads or default_threads()
        self.client = client  # Dask: the LightGBM fits (and the value model's) on the cluster

    def _model(self, params: dict[str, Any]) -> Any:
        from training.customers import ChurnModel, RepurchaseModel

        cls = ChurnModel if self.kind == "churn" else RepurchaseModel
        return cls(
            horizon_days=self.horizon_days, num_threads=self.threads, client=self.client, **params
        )

    def _labels(self, ds: Dataset, at: pd.Timestamp, population: pd.Index) -> np.ndarray:
        fn = churn_labels if self.kind == "churn" else repurchase_labels
        return np.asarray(fn(ds.orders, at, population, self.horizon_days).to_numpy())

    def backtest(self, ds: Dataset, as_of: pd.Timestamp, params: dict[str, Any]) -> Backtest:
        from training.customers import REFERENCE_NAMES
        from training.metrics import classification_metrics

        at = as_of - pd.Timedelta(days=self.horizon_days)
        # the model reads lines before `at` and labels ending by `at`: no filtered copy needed
        cache = self._snapshots(ds, params)
        model = self._model(params).fit(
            ds.orders, at, items=ds.items, customers=ds.customers, snapshots=cache, score=False
        )
        feats = cache.features(at)  # every customer at `at` (computed once, for the scores)
        y = self._labels(ds, at, feats.index)
        scores = {"shopml": model.predict_proba(feats)}
        for name, art in model.candidates_.items():
            if name != "lightgbm":
                X = feats[art.feature_names].to_numpy(np.float64)
                scores[REFERENCE_NAMES.get(name, name)] = art.predict_proba(X)
        metrics = {name: classification_metrics(y, s) for name, s in scores.items()}
        what = f"{self.kind} within {self.horizon_days} days"
        window = f"{at.date()}..{as_of.date()}"
        return Backtest(
            window=window,
            metrics=metrics,
            gate_metric="roc_auc",
            higher_is_better=True,
            figures={
                "roc.png": plots.roc(y, scores, f"ROC: {what} ({window})"),
                "gains.png": plots.gains(
                    y, scores, f"Cumulative gains: {what} ({window})", positives=self.positives
                ),
                "calibration.png": plots.calibration(
                    y, scores["shopml"], f"Reliability: {what} ({window})", outcome=self.kind
                ),
            },
            notes=[f"served: {model.chosen_}"],
        )

    def _snapshots(self, ds: Dataset, params: dict[str, Any]) -> Any:
        """The snapshot cache: shared, on the Dask cluster with a client, else in process; with
        the optional re-buy/habit columns (a ``features`` parameter naming one) a private one in
        process (the Dask engine does not compute them: their re-buy gap statistics are float
        sums, not exactly additive over partitions)."""
        from training.snapshots import UserSnapshots, snapshots_for, uses_optional

        if uses_optional(params.get("features") or ()):
            if self.client is not None:
                log.info(
                    "%s: its features include optional re-buy/habit columns, which the Dask "
                    "engine does not compute: its snapshots are built in this process",
                    self.kind,
                )
            return UserSnapshots(ds.orders, items=ds.items, customers=ds.customers, optional=True)
        if self.client is None:
            return snapshots_for(ds.orders, ds.items, ds.customers)
        from training.dask_models import cluster_snapshots_for

        return cluster_snapshots_for(self.client, ds)

    def fit(self, ds: Dataset, as_of: pd.Timestamp, params: dict[str, Any], folder: Path) -> Fitted:
        cache = self._snapshots(ds, params)
        tables = {"items": ds.items, "customers": ds.customers, "snapshots": cache}
        model = self._model(params).fit(ds.orders, as_of, **tables)
        artifact = model.artifact_
        if artifact.booster is None and not artifact.reference:
            # a served baseline explains a customer against the typical one (the population's
            # median inputs at as_of), as LightGBM's contributions are against the average
            # prediction; its reasons are rescored with that reference
            feats = cache.features(as_of)
            artifact.set_reference(feats[artifact.feature_names].to_numpy(np.float64))
            artifact.scores = model.score_table(ds.orders, as_of, features=feats)
        if self.kind == "churn":
            from training.customer_value import ValueModel

            cap = {k: v for k, v in params.items() if k == "max_train_customers"}
            value = ValueModel(num_threads=self.threads, client=self.client, **cap)
            value = value.fit(ds.orders, as_of, **tables)
            worth = value.artifact_
            if artifact.scores is None or worth is None or worth.scores is None:
                raise RuntimeError("churn and value models must both produce score tables")
            artifact.scores = value_at_risk(artifact.scores, worth.scores)
            artifact.notes.extend(f"value model: {n}" for n in worth.notes)
            worth.save(folder / VALUE_SUBFOLDER)
        artifact.save(folder)
        ids = artifact.scores["customer_id"].head(3).tolist()
        return Fitted(
            folder,
            pd.DataFrame({"customer_id": ids}),
            summary={"served": model.chosen_, "customers_scored": len(artifact.scores)},
            notes=list(artifact.notes),
        )


#: Weeks of history before the backtest window that pick the items of the forecast plot.
TOP_WEEKS = 26


def top_sellers(hist: np.ndarray, k: int) -> np.ndarray:
    """Rows of ``hist`` (items x weeks of units) of the ``k`` steadiest sellers: the largest
    median weekly units over the last :data:`TOP_WEEKS` weeks, ties by their total. A one-off
    order (Online Retail's 74,215 storage jars, returned the same day) does not make an item a
    top seller as the all-history total did."""
    recent = hist[:, -TOP_WEEKS:]
    order = np.lexsort((-recent.sum(axis=1), -np.median(recent, axis=1)))
    return order[:k]


def _item_names(model: Any, items: pd.Index) -> dict[str, str]:
    """Item id -> display name from the fitted demand artifact (empty when it has none)."""
    try:
        info = model.artifact_.item_info(items)
    except (AttributeError, KeyError, ValueError):
        return {}
    return {str(i): str(n) for i, n in zip(items, info["name"], strict=True) if n and n != "nan"}


def _item_label(item_id: str, name: str | None) -> str:
    """A forecast panel's title: the id, and the name when the catalogue has one."""
    return f"{item_id} {name}" if name and name != item_id else item_id


#: The churn model folder carries the customer-value model here (value at risk needs both).
VALUE_SUBFOLDER = "value"


class ChurnJob(_CustomerJob):
    """P(no purchase in the next 90 days), with expected 365-day value and value at risk."""

    kind = "churn"
    window_days = 90
    positives = "churners"


class RepurchaseJob(_CustomerJob):
    """P(at least one purchase in the next 30 days)."""

    kind = "repurchase"
    window_days = 30
    positives = "repeat buyers"


JOBS: dict[str, type[Any]] = {"churn": ChurnJob, "repurchase": RepurchaseJob}
#: Kinds whose LightGBM fits can run on a Dask cluster (``client=``); the others fit in process.
DISTRIBUTED_KINDS = ("churn", "repurchase", "demand")


# --------------------------------------------------------------------------- demand
class DemandJob:
    """Weekly P10/P50/P90 per item vs naive, moving-average and empirical-quantile baselines."""

    kind: ClassVar[str] = "demand"
    window_days: ClassVar[int] = 84
    horizon: ClassVar[int] = 12

    def __init__(self, threads: int | None = None, client: Client | None = None) -> None:
        self.threads = threads or default_threads()
        self.client = client  # Dask: the quantile models' LightGBM fits on the cluster

    def _model(self, params: dict[str, Any]) -> Any:
        from training.demand import DemandModel

        return DemandModel(
            horizon=self.horizon, num_threads=self.threads, client=self.client, **params
        )

    def backtest(self, ds: Dataset, as_of: pd.Timestamp, params: dict[str, Any]) -> Backtest:
        from features.demand import active_items, last_full_week, weekly_demand
        from training.benchmarks import demand as protocol

        h = self.horizon
        origin = last_full_week(as_of) - pd.Timedelta(weeks=h)
        start = protocol.origin_as_of(origin)
        # weekly_demand keeps purchases strictly before its as_of (start, or the end of the
        # window for the actuals, both <= as_of): no filtered copy of the orders is needed
        buys = ds.orders
        model = self._model(params).fit(buys, start, ds.items)
        wd = weekly_demand(buys, start)
        rows = np.flatnonzero(active_items(wd.units))
        items = wd.items[rows]
        hist = wd.units[rows]
        y = protocol.actuals(buys, items, str(origin.date()), h)
        fc = model.artifact_.forecast_arrays(items, h)
        quant = np.stack([fc["p10"], fc["p50"], fc["p90"]])
        emp = protocol.ref_empirical(hist, h)
        forecasts = {
            "shopml": (fc["point"], quant),
            "naive": (protocol.ref_naive(hist, h), None),
            "mean-12": (protocol.ref_mean(hist, h, 12), None),
            "mean-4": (protocol.ref_mean(hist, h, 4), None),
            "empirical-quantiles-12": (emp[1], emp),
        }
        metrics: dict[str, dict[str, float]] = {}
        for name, (point, q) in forecasts.items():
            metrics[name] = protocol.point_metrics(hist, y, point)
            if q is not None:
                metrics[name] |= protocol.quantile_metrics(y, q)
        metrics["shopml"]["series"] = float(len(rows))
        window = f"{(origin + pd.Timedelta(days=1)).date()}..{as_of.date()}"
        return Backtest(
            window=window,
            metrics=metrics,
            gate_metric="mase",
            higher_is_better=False,
            figures=self._figures(
                items, hist, y, fc, forecasts, origin, window, _item_names(model, items)
            ),
        )

    def _figures(
        self,
        items: pd.Index,
        hist: np.ndarray,
        y: np.ndarray,
        fc: dict[str, np.ndarray],
        forecasts: dict[str, Any],
        origin: pd.Timestamp,
        window: str,
        names: dict[str, str] | None = None,
    ) -> dict[str, Figure]:
        names = names or {}
        h = y.shape[1]
        weeks = [str((origin + pd.Timedelta(weeks=i + 1)).date()) for i in range(h)]
        top = top_sellers(hist, 9)
        series = {
            _item_label(str(items[i]), names.get(str(items[i]))): (
                y[i],
                fc["p10"][i],
                fc["p50"][i],
                fc["p90"][i],
            )
            for i in top
        }
        total = np.maximum(y.sum(axis=0), 1e-9)
        wape_by_h = {
            name: (np.abs(point - y).sum(axis=0) / total).tolist()
            for name, (point, _) in forecasts.items()
        }
        inside = (y >= fc["p10"]) & (y <= fc["p90"])
        horizons = list(range(1, h + 1))
        return {
            "forecast_vs_actual.png": plots.forecast_vs_actual(
                weeks,
                series,
                f"Top sellers (median weekly units, last {TOP_WEEKS} weeks): forecast vs actual "
                f"({window})",
            ),
            "wape_by_horizon.png": plots.by_horizon(
                horizons,
                wape_by_h,
                "WAPE (|error| / actual units, lower is better)",
                f"Forecast error by weeks ahead, {len(items)} items ({window})",
            ),
            "coverage_by_horizon.png": plots.by_horizon(
                horizons,
                {"shopml [P10, P90]": inside.mean(axis=0).tolist()},
                "share of actual weeks inside [P10, P90]",
                f"Interval coverage by weeks ahead ({window})",
                reference={"nominal 80%": 0.8},
            ),
        }

    def fit(self, ds: Dataset, as_of: pd.Timestamp, params: dict[str, Any], folder: Path) -> Fitted:
        model = self._model(params).fit(ds.orders, as_of, ds.items)  # purchases before as_of
        model.save(folder)
        art = model.artifact_
        p50 = art.forecast_arrays(art.items, 1)["p50"][:, 0]  # examples that sell, not 0s
        items = [str(art.items[i]) for i in np.argsort(-p50, kind="stable")[:3]]
        return Fitted(
            folder,
            pd.DataFrame({"item_id": items, "horizon": [self.horizon] * len(items)}),
            summary={
                "items_forecast": len(model.artifact_.items),
                "origin": str(model.artifact_.origin),
            },
        )


JOBS["demand"] = DemandJob


# ---------------------------------------------------------------------- recommender
class RecommenderJob:
    """Top-10 recommendations vs popularity and buy-again on the last 90 days (NDCG@10)."""

    kind: ClassVar[str] = "recommender"
    window_days: ClassVar[int] = 90
    ks: ClassVar[tuple[int, ...]] = (1, 3, 5, 10, 20)
    max_backtest_users: ClassVar[int] = 20_000  # evaluated users (a fixed random sample above)
    backtest_cells: ClassVar[int] = 200_000_000  # ... and users x items ranked live at most
    #: above this many customers the backtest's model is fitted on a fixed random sample of them
    #: (the model that is served is fitted on every customer)
    backtest_fit_users: ClassVar[int] = 200_000

    def __init__(self, threads: int | None = None) -> None:
        self.threads = threads or default_threads()

    def _model(self, params: dict[str, Any]) -> Any:
        from training.recommender import RecommenderModel

        return RecommenderModel(num_threads=self.threads, **params)

    def backtest(self, ds: Dataset, as_of: pd.Timestamp, params: dict[str, Any]) -> Backtest:
        from features.interactions import build_interactions, purchases_before
        from features.schema import CUSTOMER_ID, ITEM_ID
        from training.benchmarks.recommend import ranking_metrics
        from training.buy_again import buy_again_lists
        from training.recommender_caps import capped_sample, cell_cap

        at = as_of - pd.Timedelta(days=self.window_days)
        buys = purchases_before(ds.orders, as_of)
        # ranked live for the evaluated users only: precomputing every user's lists is for serving
        model = self._model(
            {"max_users": self.backtest_fit_users, **params, "precompute_width": 0}
        ).fit(buys, at, items=ds.items, customers=ds.customers)
        train = build_interactions(buys, at, weight="orders")
        recent = build_interactions(
            buys, at, since=at - pd.Timedelta(days=90), weight="binary", item_ids=train.item_ids
        )
        test = purchases_before(buys, as_of, at)
        pairs = pd.DataFrame(
            {"user": test[CUSTOMER_ID].astype(str), "item": test[ITEM_ID].astype(str)}
        )
        truth_by_user: dict[str, set[str]] = {
            str(u): set(group) for u, group in pairs.groupby("user")["item"]
        }
        index = train.user_index()
        users = [u for u in truth_by_user if u in index and model.artifact.knows_user(u)]
        cap = cell_cap(self.max_backtest_users, self.backtest_cells, len(train.item_ids))
        users = [users[i] for i in capped_sample(len(users), cap, 0)]
        truth = [truth_by_user[u] for u in users]
        rows = np.array([index[u] for u in users], dtype=np.int64)
        top = max(self.ks)
        popularity = np.asarray(recent.matrix.sum(axis=0)).ravel()
        pop_order = np.argsort(-popularity, kind="stable")[:top]
        own = buy_again_lists(train.matrix[rows], popularity, top)
        recs = {
            "shopml": model.artifact.recommend_batch(users, top, exclude="auto"),
            "popularity-90d": [train.item_ids[pop_order].tolist()] * len(users),
            "buy-again": [train.item_ids[r[r >= 0]].tolist() for r in own],
        }
        n_items = len(train.item_ids)
        metrics = {name: ranking_metrics(r, truth, n_items, k=10) for name, r in recs.items()}
        curves = {
            name: [ranking_metrics(r, truth, n_items, k=k)[f"ndcg@{k}"] for k in self.ks]
            for name, r in recs.items()
        }
        metrics["shopml"]["users"] = float(len(users))
        window = f"{at.date()}..{as_of.date()}"
        return Backtest(
            window=window,
            metrics=metrics,
            gate_metric="ndcg@10",
            higher_is_better=True,
            figures={
                "ndcg_vs_k.png": plots.metric_vs_k(
                    self.ks, curves, "NDCG@k", f"Recommendations, users active {window}"
                ),
                "coverage.png": plots.bars(
                    {n: m["coverage"] for n, m in metrics.items()},
                    "share of the catalogue in anybody's top 10",
                    f"Catalogue coverage, users active {window}",
                    share=True,
                ),
            },
        )

    def fit(self, ds: Dataset, as_of: pd.Timestamp, params: dict[str, Any], folder: Path) -> Fitted:
        # the model reads only purchases before as_of: no filtered copy of the orders here
        model = self._model(params).fit(ds.orders, as_of, items=ds.items, customers=ds.customers)
        model.save(folder)
        art = model.artifact
        users = [str(u) for u in art.user_ids[:2]]
        return Fitted(
            folder,
            pd.DataFrame({"user_id": [*users, "unknown-user"], "k": [10, 5, 3]}),
            summary={"users": art.n_users, "items": art.n_items},
        )


JOBS["recommender"] = RecommenderJob


def check_params(kind: str, params: dict[str, Any]) -> dict[str, Any]:
    """An experiment's ``params.<kind>`` checked against ``kind``'s model class, before any
    training: every name must be an argument of its constructor, every value of that argument's
    annotated type (converted as pydantic's lax mode does: ``"3"`` -> 3, a list -> a tuple) and
    accepted by the constructor. Returns the converted settings; raises ``ValueError`` naming
    ``params.<kind>`` otherwise."""
    job = JOBS[kind](threads=1)
    hints = typing.get_type_hints(type(job._model({})).__init__, localns={"Client": Any})
    checked = dict(params)
    for name, value in params.items():
        if name in hints:
            try:
                checked[name] = TypeAdapter(hints[name]).validate_python(value)
            except ValidationError as exc:
                reason = exc.errors()[0]["msg"]
                raise ValueError(
                    f"experiment params.{kind}.{name}: {reason} (got {value!r})"
                ) from None
    try:
        job._model(dict(checked))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"experiment params.{kind}: {exc}") from None
    return checked
