"""The Dask engine on a 2-worker LocalCluster against the pandas engine on a small shop.

Features must be *equal* (same values, same order, same dtypes), the customer models' snapshot
frames too (item momentum included, so a churn model fitted on them is the same model); the churn classifier trained
through ``lightgbm.dask`` must match the in-process one within the tolerance documented in
:mod:`training.dask_models`; Dask batch scoring of one booster must equal in-process scoring.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from features.engine import (
    ITEM_DEPENDENT_USER_COLUMNS,
    DaskOrders,
    build_features,
    dask_client,
)
from features.io import Dataset, load_dataset
from features.pipeline import FeatureSet
from features.synthetic import ShopConfig, write_shop
from features.users import user_features
from training import dask_models as dm
from training.snapshots import UserSnapshots

pytestmark = pytest.mark.integration

AS_OF = pd.Timestamp("2024-10-01")  # data runs to 2024-12-31: labels are computed too


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    out = tmp_path_factory.mktemp("shop") / "s"
    write_shop(ShopConfig(n_customers=1200, n_items=120, seed=3), out, progress=False)
    return load_dataset(out)


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    with dask_client(n_workers=2, local_directory=tmp_path_factory.mktemp("dask")) as c:
        yield c


@pytest.fixture(scope="module")
def data(client: object, dataset: Dataset) -> DaskOrders:
    return DaskOrders(client, dataset, npartitions=4)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def both(client: object, dataset: Dataset) -> tuple[FeatureSet, FeatureSet]:
    pandas_fs = build_features(dataset, AS_OF, engine="pandas")
    dask_fs = build_features(dataset, AS_OF, engine="dask", client=client, npartitions=4)  # type: ignore[arg-type]
    return pandas_fs, dask_fs


def test_user_and_item_features_are_equal(both: tuple[FeatureSet, FeatureSet]) -> None:
    ref, got = both
    assert len(ref.users) > 500 and len(ref.items) > 50
    pd.testing.assert_frame_equal(ref.users, got.users, check_exact=True)
    pd.testing.assert_frame_equal(ref.items, got.items, check_exact=True)
    assert ref.labels is not None and got.labels is not None
    pd.testing.assert_frame_equal(ref.labels, got.labels, check_exact=True)


def test_interactions_and_weekly_demand_are_equal(both: tuple[FeatureSet, FeatureSet]) -> None:
    ref, got = both
    np.testing.assert_array_equal(ref.interactions.user_ids, got.interactions.user_ids)
    np.testing.assert_array_equal(ref.interactions.item_ids, got.interactions.item_ids)
    assert ref.interactions.matrix.dtype == got.interactions.matrix.dtype
    assert (ref.interactions.matrix != got.interactions.matrix).nnz == 0
    pd.testing.assert_index_equal(ref.demand.items, got.demand.items)
    pd.testing.assert_index_equal(ref.demand.weeks, got.demand.weeks)
    np.testing.assert_array_equal(ref.demand.units, got.demand.units)
    np.testing.assert_array_equal(ref.demand.price, got.demand.price)


def test_item_dependent_user_columns_need_the_global_statistics(
    dataset: Dataset, both: tuple[FeatureSet, FeatureSet]
) -> None:
    """Why the engine computes item statistics first: one partition alone gets them wrong."""
    ref, _ = both
    orders = dataset.orders
    half = orders[orders["customer_id"].cat.codes.to_numpy() % 2 == 0].copy()
    for col in ("customer_id", "order_id", "item_id"):  # as in a partition: only its own ids
        half[col] = half[col].cat.remove_unused_categories()
    alone = user_features(half, AS_OF, items=dataset.items, customers=dataset.customers)
    expected = ref.users.loc[alone.index]
    others = [c for c in alone.columns if c not in ITEM_DEPENDENT_USER_COLUMNS]
    pd.testing.assert_frame_equal(alone[others], expected[others], check_exact=True)
    for col in ITEM_DEPENDENT_USER_COLUMNS:
        assert not np.allclose(alone[col], expected[col], equal_nan=True), col


def _caches(data: DaskOrders, dataset: Dataset) -> tuple[UserSnapshots, dm.DaskUserSnapshots]:
    local = UserSnapshots(dataset.orders, items=dataset.items, customers=dataset.customers)
    return local, dm.DaskUserSnapshots(data, dataset)


def test_snapshot_frames_from_the_dask_engine_equal_in_process(
    data: DaskOrders, dataset: Dataset
) -> None:
    local, dist = _caches(data, dataset)
    cutoffs = [AS_OF - pd.Timedelta(days=d) for d in (0, 30, 120)]
    for cutoff in cutoffs:
        ref, got = local.features(cutoff), dist.features(cutoff)
        assert len(ref) > 300 and ref["item_momentum"].notna().all(), cutoff
        pd.testing.assert_frame_equal(got, ref, check_exact=True)
    sample = local.population(AS_OF, 400)
    assert sample is not None and len(sample) == 400
    pd.testing.assert_index_equal(dist.population(AS_OF, 400), sample)  # type: ignore[arg-type]
    for cutoff in cutoffs:  # the sample's partitions hold only its orders: rows of the whole
        ref, got = (
            local.features(cutoff, sample),
            dist.features(cutoff, dist.population(AS_OF, 400)),
        )
        assert len(ref) > 150 and set(ref.dtypes) == {np.dtype(np.float32)}
        pd.testing.assert_frame_equal(got, ref, check_exact=True)
    assert dist.computed == local.computed
    with pytest.raises(ValueError, match="not in the orders"):
        data.per_customer(user_features, AS_OF, population=pd.Index(["no-such-customer"]))


def test_churn_model_fitted_on_dask_snapshots_equals_in_process(
    data: DaskOrders, dataset: Dataset
) -> None:
    from training.customers import ChurnModel

    fast: dict[str, Any] = {"n_snapshots": 3, "num_boost_round": 40, "num_threads": 1, "seed": 7}
    fast["max_train_customers"] = 400  # sampled snapshots (float32) and every customer's
    orders, items, customers = dataset.orders, dataset.items, dataset.customers
    local_cache, dist_cache = _caches(data, dataset)
    local = ChurnModel(**fast).fit(orders, AS_OF, items, customers, snapshots=local_cache)
    dist = ChurnModel(**fast).fit(orders, AS_OF, items, customers, snapshots=dist_cache)
    assert dist_cache.computed == local_cache.computed and len(local_cache.computed) > 3
    assert dist.chosen_ == local.chosen_ and dist.validation_ == local.validation_
    assert local.artifact_ is not None and dist.artifact_ is not None
    assert "item_momentum" in local.artifact_.feature_names
    assert dist.candidates_.keys() == local.candidates_.keys()
    boosters = [(dist.candidates_[k].booster, art.booster) for k, art in local.candidates_.items()]
    assert sum(b is not None for _, b in boosters) >= 2  # lightgbm and lightgbm-rfm
    for got, ref in boosters:
        assert (got and got.model_to_string()) == (ref and ref.model_to_string())
    assert local.artifact_.scores is not None and dist.artifact_.scores is not None
    pd.testing.assert_frame_equal(dist.artifact_.scores, local.artifact_.scores, check_exact=True)


def test_customer_jobs_share_one_cluster_snapshot_cache(
    client: object, dataset: Dataset, caplog: pytest.LogCaptureFixture
) -> None:
    from training.jobs import ChurnJob, RepurchaseJob

    churn = ChurnJob(client=client)  # type: ignore[arg-type]
    cache = churn._snapshots(dataset, {})
    assert isinstance(cache, dm.DaskUserSnapshots)
    assert RepurchaseJob(client=client)._snapshots(dataset, {}) is cache  # type: ignore[arg-type]
    assert ChurnJob()._snapshots(dataset, {}) is not cache  # without a client: in process
    optional = {"features": ["recency_days", "n_orders", "items_due"], "n_snapshots": 2}
    with caplog.at_level("INFO", logger="training.jobs"):
        own = churn._snapshots(dataset, optional)
    assert "optional re-buy/habit columns" in caplog.text
    assert type(own) is UserSnapshots and own.optional  # in process, with those columns
    # the backtest scores every customer with them (it raised a KeyError on the shared cache)
    bt = ChurnJob(threads=1).backtest(dataset, AS_OF, {**optional, "num_boost_round": 20})
    assert 0.5 < bt.value <= 1.0


def test_unknown_engine_is_refused(dataset: Dataset) -> None:
    with pytest.raises(ValueError, match="unknown engine"):
        build_features(dataset, AS_OF, engine="spark")  # type: ignore[arg-type]


def test_lightgbm_dask_churn_within_tolerance_and_dask_scoring_equal(
    client: object, data: DaskOrders, dataset: Dataset
) -> None:
    cutoffs = dm.snapshot_cutoffs(AS_OF, 90, 4)
    train_cuts, val_cut = cutoffs[1:], cutoffs[0]
    snaps = dm.dask_snapshots(data, train_cuts)
    local_snaps = dm.pandas_snapshots(
        dataset.orders, train_cuts, items=dataset.items, customers=dataset.customers
    )
    pd.testing.assert_frame_equal(snaps.X, local_snaps.X, check_exact=True)
    np.testing.assert_array_equal(snaps.y, local_snaps.y)

    dist = dm.fit_dask(client, snaps, rounds=60)  # type: ignore[arg-type]
    local = dm.fit_local(local_snaps, rounds=60)
    val = dm.dask_snapshots(data, [val_cut])
    p_dist = dm.score_dask(client, dist, val.X)  # type: ignore[arg-type]
    p_local = dm.score_local(local, val.X)
    auc_dist, auc_local = roc_auc_score(val.y, p_dist), roc_auc_score(val.y, p_local)
    assert auc_local > 0.6
    assert abs(auc_dist - auc_local) <= dm.AUC_TOLERANCE, (auc_dist, auc_local)
    rho = pd.Series(p_dist.to_numpy()).corr(pd.Series(p_local.to_numpy()), method="spearman")
    assert rho >= dm.RANK_CORRELATION_MIN, rho
    # batch scoring through Dask is the same computation: equal to in-process scoring
    pd.testing.assert_series_equal(p_dist, dm.score_local(dist, val.X), check_exact=True)


def test_scheduler_address_is_used(tmp_path: Path) -> None:
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=1,
        threads_per_worker=1,
        processes=False,  # in-process (inproc:// address): nothing listens on the network
        dashboard_address="127.0.0.1:0",
        local_directory=str(tmp_path),
    ) as cluster:
        address = cluster.scheduler_address
        with dask_client(address) as c:
            assert c.scheduler is not None and c.scheduler.address == address


def test_churn_model_fits_through_lightgbm_dask_within_tolerance(
    client: object, dataset: Dataset
) -> None:
    from training.customers import ChurnModel

    fast: dict[str, Any] = {"n_snapshots": 3, "num_boost_round": 40, "num_threads": 1, "seed": 7}
    local = ChurnModel(**fast).fit(dataset.orders, AS_OF)
    dist = ChurnModel(**fast, client=client).fit(dataset.orders, AS_OF)  # type: ignore[arg-type]
    assert dist.validation_cutoff_ == local.validation_cutoff_
    auc_dist, auc_local = (
        dist.validation_["lightgbm"]["roc_auc"],
        local.validation_["lightgbm"]["roc_auc"],
    )
    assert auc_local > 0.6
    assert abs(auc_dist - auc_local) <= dm.AUC_TOLERANCE, (auc_dist, auc_local)
    assert dist.artifact_ is not None and local.artifact_ is not None
    dist_scores, local_scores = dist.artifact_.scores, local.artifact_.scores
    assert dist_scores is not None and local_scores is not None
    assert len(dist_scores) == len(local_scores)  # every customer scored


def test_customer_scores_through_dask_equal_in_process(client: object, dataset: Dataset) -> None:
    from training.customers import ChurnModel
    from training.snapshots import customer_features

    fast: dict[str, Any] = {"n_snapshots": 3, "num_boost_round": 30, "num_threads": 1, "seed": 7}
    model = ChurnModel(**fast).fit(dataset.orders, AS_OF, score=False)
    local = model.score_table(dataset.orders, AS_OF)
    model.client = client  # type: ignore[assignment]
    pd.testing.assert_frame_equal(model.score_table(dataset.orders, AS_OF), local, check_exact=True)
    art = model.artifact_
    assert art is not None
    X = customer_features(dataset.orders, AS_OF)[art.feature_names].to_numpy(np.float64)
    proba, reasons = dm.score_customers(client, art, X, chunk_rows=97)  # type: ignore[arg-type]
    np.testing.assert_array_equal(proba, local["churn_proba"].to_numpy())
    assert reasons.tolist() == local["reasons"].tolist()
    with pytest.raises(ValueError, match="chunk_rows must be >= 1"):
        dm.score_customers(client, art, X, chunk_rows=0)  # type: ignore[arg-type]


def test_train_command_refuses_a_scheduler_without_the_dask_engine() -> None:
    from typer.testing import CliRunner

    from shopml.cli import app

    bad = CliRunner().invoke(app, ["train", "--engine", "spark"])
    assert bad.exit_code != 0 and "use one of pandas, dask" in str(bad.exception)
    bad = CliRunner().invoke(app, ["train", "--scheduler", "tcp://127.0.0.1:1"])
    assert bad.exit_code != 0 and "--scheduler needs --engine dask" in str(bad.exception)


def _pinball(y: np.ndarray, f: Any, q: float) -> float:
    d = y - np.asarray(f)
    return float(np.mean(np.maximum(q * d, (q - 1) * d)))


def test_regressor_through_lightgbm_dask_takes_weights_and_categories(client: object) -> None:
    import lightgbm as lgb

    rng = np.random.default_rng(0)
    n = 6000
    X = pd.DataFrame({"x": rng.normal(size=n), "category": rng.integers(0, 6, n).astype(float)})
    effect = np.array([5.0, -3.0, 0.0, 8.0, 1.0, -6.0])  # per category: not monotone
    y = 2 * X["x"].to_numpy() + effect[X["category"].to_numpy(np.int64)] + rng.normal(size=n)
    w = rng.uniform(0.5, 2.0, n)
    params = {"objective": "quantile", "alpha": 0.9, "num_leaves": 7, "num_threads": 1}
    params |= {"seed": 0, "deterministic": True, "verbose": -1}
    names = list(X.columns)
    data = lgb.Dataset(
        X.to_numpy(), y, weight=w, feature_name=names, categorical_feature=[names[1]]
    )
    local = lgb.train(params, data, 60)
    dist = dm.train_regressor(client, X, y, params, 60, weight=w, categorical=["category"])  # type: ignore[arg-type]
    infos = dist.dump_model()["feature_infos"]
    assert sorted(infos["category"]["values"]) == [-1, 0, 1, 2, 3, 4, 5]  # split as categories
    assert infos["x"]["values"] == []  # numeric
    loss_local = _pinball(y, local.predict(X.to_numpy()), 0.9)
    loss_dist = _pinball(y, dist.predict(X.to_numpy()), 0.9)
    assert abs(loss_dist - loss_local) <= dm.REGRESSION_TOLERANCE * loss_local, (
        loss_dist,
        loss_local,
    )


def test_value_scores_through_dask_equal_in_process(client: object) -> None:
    """Value scoring (``predict_rows``) through Dask is the same computation as in process."""
    from shopml.artifacts.customers import CustomerArtifact

    rng = np.random.default_rng(1)
    names = ["recency_days", "frequency", "monetary_mean"]
    X = np.abs(rng.normal(50, 20, size=(1000, 3)))
    spend = X[:, 2] * rng.uniform(0, 2, 1000)
    tweedie = {"objective": "tweedie", "verbose": -1}
    frame = pd.DataFrame(X, columns=names)
    booster = dm.train_regressor(client, frame, spend, tweedie, 20)  # type: ignore[arg-type]
    art = CustomerArtifact("value", "lightgbm", names, 90, "2024-10-01", booster=booster)
    got = dm.predict_rows(client, art, X, chunk_rows=97)  # type: ignore[arg-type]
    np.testing.assert_array_equal(got, art.predict(X))


def test_value_model_fits_through_lightgbm_dask_within_tolerance(
    client: object, dataset: Dataset
) -> None:
    from training.customer_value import ValueModel

    fast: dict[str, Any] = {"horizon_days": 90, "n_snapshots": 3, "num_boost_round": 60}
    local = ValueModel(**fast).fit(dataset.orders, AS_OF)
    dist = ValueModel(**fast, client=client).fit(dataset.orders, AS_OF)  # type: ignore[arg-type]
    rmse_local = local.validation_["lightgbm"]["rmse"]
    rmse_dist = dist.validation_["lightgbm"]["rmse"]
    assert abs(rmse_dist - rmse_local) <= dm.REGRESSION_TOLERANCE * rmse_local
    assert dist.artifact_ is not None and local.artifact_ is not None
    assert dist.artifact_.scores is not None and local.artifact_.scores is not None
    assert len(dist.artifact_.scores) == len(local.artifact_.scores) > 500  # every customer


def test_demand_model_fits_through_lightgbm_dask_within_tolerance(
    client: object, dataset: Dataset
) -> None:
    from training.demand import DemandModel

    fast: dict[str, Any] = {"horizon": 12, "num_rounds": 40, "models": ("lgb_raw",)}
    local = DemandModel(**fast).fit(dataset.orders, AS_OF, dataset.items)
    dist = DemandModel(**fast, client=client).fit(dataset.orders, AS_OF, dataset.items)  # type: ignore[arg-type]
    for key in ("quantile_loss", "pinball@0.5[lgb_raw]", "mase[lgb_raw_p50]"):
        ref, got = local.combination_.scores[key], dist.combination_.scores[key]
        assert abs(got - ref) <= dm.REGRESSION_TOLERANCE * ref, (key, got, ref)
    assert "client" not in dist.artifact_.meta["params"]  # the saved parameters stay JSON
    np.testing.assert_array_equal(dist.artifact_.items, local.artifact_.items)
    assert dist.artifact_.quantiles.shape == local.artifact_.quantiles.shape
