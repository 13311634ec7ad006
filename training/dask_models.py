"""LightGBM trained through ``lightgbm.dask`` and batch scoring through Dask.

Every LightGBM model of ``shopml train --engine dask`` fits here: the churn and repurchase
classifiers with :func:`train_binary` (:class:`lightgbm.dask.DaskLGBMClassifier`), the
customer-value (tweedie) and demand (quantile) regressors with :func:`train_regressor`
(:class:`lightgbm.dask.DaskLGBMRegressor`, optional weights and categorical columns); the
models pass their own ``lgb.train`` parameters. Each result is an ordinary
:class:`lightgbm.Booster`, so it saves, registers and serves like one trained in process. Tables
are scored on the workers in chunks: :func:`score_customers` (probabilities and reason phrases),
:func:`predict_rows` (customer value), :func:`score_dask` (``Booster.predict`` per partition).

The customer models' training snapshots under ``--engine dask`` come from the Dask feature
engine too (:class:`DaskUserSnapshots`, :func:`cluster_snapshots_for`: every frame computed per
customer partition, equal to the in-process frames); so do the scale benchmark's snapshots (user
features as of monthly cutoffs, churn label over the next ``horizon`` days, :func:`dask_snapshots`).

Tolerance against the in-process path (same data, same parameters): distributed LightGBM builds
its histograms from each worker's rows, so bin boundaries and split ties can differ and the trees
are not bit-identical. Documented and tested: classifiers' validation ROC-AUC within 0.02 of the
in-process model, scores with Spearman correlation >= 0.95; regressors' validation loss (value
RMSE, demand pinball/MASE) within 5 % (relative). Scoring the same model through Dask equals
in-process scoring exactly.
"""

from __future__ import annotations

import logging
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import lightgbm as lgb
import numpy as np
import pandas as pd

from features.labels import churn_labels
from features.momentum import item_momentum_stats
from training.snapshots import UserSnapshots, customer_features

if TYPE_CHECKING:
    from distributed import Client

    from features.engine import DaskOrders
    from features.io import Dataset

log = logging.getLogger(__name__)

AUC_TOLERANCE = 0.02
RANK_CORRELATION_MIN = 0.95
#: regression models (customer value, demand quantiles): validation loss within 5 % (relative)
REGRESSION_TOLERANCE = 0.05
LABEL = "__label__"
WEIGHT = "__weight__"
#: rows per task when a table is scored on the cluster
CHUNK_ROWS = 50_000
PARAMS: dict[str, Any] = {
    "objective": "binary",
    "learning_rate": 0.05,
    "num_leaves": 15,
    "min_child_samples": 20,
    "seed": 0,
    "deterministic": True,
    "force_row_wise": True,
    "verbose": -1,
}


@dataclass(frozen=True)
class Snapshots:
    """Stacked training rows: features ``X`` and churn labels ``y`` (one row per customer-cutoff)."""

    X: pd.DataFrame
    y: np.ndarray
    cutoffs: list[pd.Timestamp]


class DaskUserSnapshots(UserSnapshots):
    """The customer models' snapshot cache (:class:`training.snapshots.UserSnapshots`) with
    every frame computed by the Dask engine: :func:`training.snapshots.customer_features` per
    customer partition (:meth:`features.engine.DaskOrders.per_customer`; a training sample's
    partitions keep only the sample's orders), with the item statistics and the item momentum
    statistics of every customer summed over the partitions by a Dask group-by
    (:meth:`~features.engine.DaskOrders.item_statistics`). Equal to the in-process frames.

    Without the optional re-buy/habit columns: their re-buy gap statistics are float sums, not
    exactly additive over partitions; a model that asks for them builds its own in-process
    cache (:meth:`training.customers.ChurnModel.fit`).
    """

    def __init__(self, data: DaskOrders, dataset: Dataset) -> None:
        super().__init__(dataset.orders, items=dataset.items, customers=dataset.customers)
        self.data = data

    def compute(self, cutoff: pd.Timestamp, sample: pd.Index | None) -> pd.DataFrame:
        item_stats, _, momentum_stats = self._stats(cutoff)
        # the embedding's item vectors of every customer, indexed as the partitions' item codes
        vectors = self._vectors(cutoff)
        vectors = vectors.set_axis(self.data.enc.items.get_indexer(vectors.index))
        return self.data.per_customer(
            customer_features,
            cutoff,
            population=sample,
            item_stats=item_stats,
            momentum_stats=momentum_stats,
            vectors=vectors,
        )

    def compute_stats(self, cutoff: pd.Timestamp) -> tuple[pd.DataFrame, None, pd.DataFrame]:
        data = self.data
        return data.item_statistics(cutoff), None, data.item_statistics(cutoff, item_momentum_stats)


_CLUSTER_CACHES: dict[int, DaskUserSnapshots] = {}


def cluster_snapshots_for(client: Client, dataset: Dataset) -> DaskUserSnapshots:
    """The shared :class:`DaskUserSnapshots` of ``dataset`` on ``client``'s cluster (the orders
    scattered and shuffled once, on first use; dropped when the orders table is freed)."""
    from features.engine import DaskOrders

    key = id(dataset.orders)
    cache = _CLUSTER_CACHES.get(key)
    tables = (dataset.orders, dataset.items, dataset.customers)
    if cache is not None and cache.data.client is client and cache.serves(*tables):
        return cache
    cache = _CLUSTER_CACHES[key] = DaskUserSnapshots(DaskOrders(client, dataset), dataset)
    weakref.finalize(dataset.orders, _CLUSTER_CACHES.pop, key, None)
    return cache


def snapshot_cutoffs(as_of: pd.Timestamp, horizon: int, n: int) -> list[pd.Timestamp]:
    """``n`` cutoffs 30 days apart, the latest with its label window complete by ``as_of``."""
    last = pd.Timestamp(as_of) - pd.Timedelta(days=horizon)
    return [last - pd.Timedelta(days=30 * k) for k in range(n)]


def dask_snapshots(data: DaskOrders, cutoffs: list[pd.Timestamp], horizon: int = 90) -> Snapshots:
    """User features (Dask engine) and churn labels per cutoff, stacked."""
    days = (horizon, horizon, horizon)
    frames, labels = [], []
    for cutoff in cutoffs:
        feats = data.users(cutoff)
        frames.append(feats.reset_index(drop=True))
        labels.append(data.labels(cutoff, feats.index, days)["churn"].to_numpy())
    return Snapshots(pd.concat(frames, ignore_index=True), np.concatenate(labels), cutoffs)


def pandas_snapshots(
    orders: pd.DataFrame,
    cutoffs: list[pd.Timestamp],
    horizon: int = 90,
    **tables: pd.DataFrame | None,
) -> Snapshots:
    """The same snapshots in process (:func:`features.users.user_features`)."""
    from features.users import user_features

    frames, labels = [], []
    for cutoff in cutoffs:
        feats = user_features(orders, cutoff, **tables)
        frames.append(feats.reset_index(drop=True))
        labels.append(churn_labels(orders, cutoff, feats.index, horizon).to_numpy())
    return Snapshots(pd.concat(frames, ignore_index=True), np.concatenate(labels), cutoffs)


def fit_dask(
    client: Client,
    snaps: Snapshots,
    *,
    rounds: int = 100,
    params: dict[str, Any] | None = None,
    npartitions: int | None = None,
) -> lgb.Booster:
    """Train on the cluster with :class:`lightgbm.dask.DaskLGBMClassifier`; the booster."""
    p = {**PARAMS, **(params or {})}
    return train_binary(client, snaps.X, snaps.y, p, rounds, npartitions=npartitions)


def train_binary(
    client: Client,
    X: pd.DataFrame,
    y: np.ndarray,
    params: dict[str, Any],
    rounds: int,
    *,
    npartitions: int | None = None,
) -> lgb.Booster:
    """A binary LightGBM booster (churn, repurchase) trained on the cluster by
    :class:`lightgbm.dask.DaskLGBMClassifier` (``params`` in ``lgb.train`` form; each worker
    uses its own threads). The rows are split over the workers."""
    from lightgbm.dask import DaskLGBMClassifier

    return _train_on_cluster(DaskLGBMClassifier, client, X, y, params, rounds, npartitions)


def train_regressor(
    client: Client,
    X: pd.DataFrame,
    y: np.ndarray,
    params: dict[str, Any],
    rounds: int,
    *,
    weight: np.ndarray | None = None,
    categorical: list[str] | None = None,
    npartitions: int | None = None,
) -> lgb.Booster:
    """A regression booster (the customer-value tweedie model, the demand quantile models)
    trained on the cluster by :class:`lightgbm.dask.DaskLGBMRegressor`: ``params`` in
    ``lgb.train`` form (objective included), optional row ``weight`` and ``categorical``
    column names as ``lgb.Dataset`` takes them."""
    from lightgbm.dask import DaskLGBMRegressor

    fit_kw = {"categorical_feature": categorical} if categorical else {}
    return _train_on_cluster(
        DaskLGBMRegressor, client, X, y, params, rounds, npartitions, weight, **fit_kw
    )


def _train_on_cluster(
    estimator: Any,
    client: Client,
    X: pd.DataFrame,
    y: np.ndarray,
    params: dict[str, Any],
    rounds: int,
    npartitions: int | None,
    weight: np.ndarray | None = None,
    **fit_kw: Any,
) -> lgb.Booster:
    """Fit a ``lightgbm.dask`` estimator on ``X``/``y`` (and ``weight``) split into one
    partition per worker; its booster. The sklearn estimator resolves the ``lgb.train``
    aliases in ``params`` as ``lgb.train`` does (same model in process: checked)."""
    from features.engine import scatter_frame

    workers = len(client.scheduler_info().get("workers", {}))
    frame = X.astype(np.float64).reset_index(drop=True)
    frame[LABEL] = np.asarray(y)  # one frame: rows, labels, weights in the same partitions
    if weight is not None:
        frame[WEIGHT] = np.asarray(weight, dtype=np.float64)
    data = scatter_frame(client, frame, npartitions or max(1, workers))
    sample_weight = data[WEIGHT] if weight is not None else None
    p = {k: v for k, v in params.items() if k not in ("num_threads", "n_jobs")}
    model = estimator(client=client, n_estimators=rounds, **p)
    model.fit(data[list(X.columns)], data[LABEL], sample_weight=sample_weight, **fit_kw)
    booster: lgb.Booster = model.booster_
    log.debug("lightgbm.dask: %d trees on %d rows over %d workers", rounds, len(y), workers)
    return booster


def fit_local(
    snaps: Snapshots, *, rounds: int = 100, params: dict[str, Any] | None = None
) -> lgb.Booster:
    """The same model trained in process."""
    p = {**PARAMS, **(params or {}), "num_threads": 1}
    data = lgb.Dataset(
        snaps.X.to_numpy(np.float64), label=snaps.y, feature_name=[str(c) for c in snaps.X.columns]
    )
    return lgb.train(p, data, num_boost_round=rounds)


def _predict(part: pd.DataFrame, model: str) -> pd.Series:
    booster = lgb.Booster(model_str=model)
    proba = booster.predict(part.to_numpy(np.float64), num_threads=1)
    return pd.Series(np.asarray(proba, dtype=np.float64), index=part.index, name="churn_proba")


def score_dask(
    client: Client, booster: lgb.Booster, features: pd.DataFrame, npartitions: int = 4
) -> pd.Series:
    """P(churn) of every row of ``features`` (customer-indexed), scored on the cluster."""
    import dask.dataframe as dd

    model = client.scatter(booster.model_to_string(), broadcast=True)
    X = dd.from_pandas(features.astype(np.float64), npartitions=npartitions, sort=False)
    meta = pd.Series(dtype=np.float64, name="churn_proba")
    out = X.map_partitions(_predict, model, meta=meta).compute()
    return out.reindex(features.index)


def score_local(booster: lgb.Booster, features: pd.DataFrame) -> pd.Series:
    """The same scores in process."""
    proba = booster.predict(features.to_numpy(np.float64), num_threads=1)
    return pd.Series(np.asarray(proba, dtype=np.float64), index=features.index, name="churn_proba")


def _score_chunk(artifact: Any, X: np.ndarray, top_k: int) -> tuple[np.ndarray, np.ndarray]:
    return artifact.predict_proba(X), artifact.reason_text(X, top_k=top_k, sep="; ")


def _predict_chunk(artifact: Any, X: np.ndarray) -> np.ndarray:
    return np.asarray(artifact.predict(X), dtype=np.float64)


def _map_chunks(
    client: Client, fn: Any, artifact: Any, X: np.ndarray, chunk_rows: int, *args: Any
) -> list[Any]:
    """``fn(artifact, chunk, *args)`` for each ``chunk_rows`` rows of ``X`` on the cluster (the
    artifact sent to every worker once), results in row order."""
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    shared = client.scatter(artifact, broadcast=True)
    starts = range(0, len(X), chunk_rows)
    futures = [client.submit(fn, shared, X[s : s + chunk_rows], *args) for s in starts]
    return list(client.gather(futures))


def score_customers(
    client: Client, artifact: Any, X: np.ndarray, *, top_k: int = 3, chunk_rows: int = CHUNK_ROWS
) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities and reason phrases of every row of ``X`` computed on the cluster: the
    artifact (a :class:`~shopml.artifacts.customers.CustomerArtifact`) is sent to every worker
    once, the rows in chunks of ``chunk_rows``; equal to scoring in process."""
    parts = _map_chunks(client, _score_chunk, artifact, X, chunk_rows, top_k)
    if not parts:
        return np.zeros(0, dtype=np.float64), np.zeros(0, dtype=object)
    proba = np.concatenate([p for p, _ in parts])
    reasons = np.concatenate([r for _, r in parts])
    return proba, reasons


def predict_rows(
    client: Client, artifact: Any, X: np.ndarray, *, chunk_rows: int = CHUNK_ROWS
) -> np.ndarray:
    """``artifact.predict`` of every row of ``X`` computed on the cluster in chunks of
    ``chunk_rows`` (the customer-value scores); equal to predicting in process."""
    parts = _map_chunks(client, _predict_chunk, artifact, X, chunk_rows)
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float64)
