"""One contract, every model kind: fit on a tiny seeded shop, predict shapes, MLflow round trip,
determinism with a seed, and nothing read from on/after ``as_of``."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pandas as pd
import pytest

from features.io import Dataset, load_dataset
from features.synthetic import ShopConfig, write_shop
from shopml.artifacts.registry import load_artifact
from training.jobs import JOBS, Fitted
from training.tracking import Tracker

KINDS = ["churn", "repurchase", "demand", "recommender"]
AS_OF = pd.Timestamp("2024-11-01")
FAST = {
    "churn": {"num_boost_round": 40, "n_snapshots": 3},
    "repurchase": {"num_boost_round": 40, "n_snapshots": 3},
    "demand": {},
    "recommender": {},
}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    out = tmp_path_factory.mktemp("shop") / "demo"
    write_shop(ShopConfig(n_customers=500, n_items=80, seed=11), out, progress=False)
    return load_dataset(out)


def fit(kind: str, ds: Dataset, folder: Path) -> Fitted:
    return JOBS[kind](threads=1).fit(ds, AS_OF, FAST[kind], folder)


def predict(folder: Path, example: pd.DataFrame) -> pd.DataFrame:
    return load_artifact(folder).predict_frame(example)


@pytest.fixture(scope="module")
def fitted(dataset: Dataset, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Fitted]:
    root = tmp_path_factory.mktemp("models")
    return {kind: fit(kind, dataset, root / kind) for kind in KINDS}


@pytest.mark.parametrize("kind", KINDS)
def test_predict_shapes(kind: str, fitted: dict[str, Fitted]) -> None:
    f = fitted[kind]
    out = predict(f.folder, f.input_example)
    assert len(out) > 0
    if kind in ("churn", "repurchase"):
        assert len(out) == len(f.input_example)
        assert out[f"{kind}_proba"].between(0, 1).all()
    elif kind == "demand":
        assert {"p10", "p50", "p90"} <= set(out.columns)
        assert (out["p10"] <= out["p50"]).all() and (out["p50"] <= out["p90"]).all()
        assert (out["p10"] >= 0).all()
    else:
        assert set(out["user_id"]) == set(f.input_example["user_id"])  # unknown user: fallback
        assert out.groupby("user_id").size().max() <= f.input_example["k"].max()


@pytest.mark.parametrize("kind", KINDS)
def test_deterministic_with_a_seed(
    kind: str, dataset: Dataset, fitted: dict[str, Fitted], tmp_path: Path
) -> None:
    again = fit(kind, dataset, tmp_path / kind)
    first = predict(fitted[kind].folder, fitted[kind].input_example)
    pd.testing.assert_frame_equal(first, predict(again.folder, fitted[kind].input_example))


@pytest.mark.parametrize("kind", KINDS)
def test_rows_after_as_of_change_nothing(
    kind: str, dataset: Dataset, fitted: dict[str, Fitted], tmp_path: Path
) -> None:
    cut = Dataset(
        dataset.orders[dataset.orders["ordered_at"] < AS_OF].reset_index(drop=True),
        dataset.items,
        dataset.customers,
        sources=dataset.sources,
    )
    again = fit(kind, cut, tmp_path / kind)
    first = predict(fitted[kind].folder, fitted[kind].input_example)
    pd.testing.assert_frame_equal(first, predict(again.folder, fitted[kind].input_example))


@pytest.mark.integration
def test_mlflow_round_trip_gives_the_same_predictions(
    fitted: dict[str, Fitted], tmp_path: Path
) -> None:
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", experiment="contract")
    for kind in KINDS:
        f = fitted[kind]
        with tracker.run(kind):
            info = tracker.log_model(
                kind,
                f.folder,
                f.input_example,
                gate_metric="m",
                gate_value=1.0,
                higher_is_better=True,
                backtest_key="k",
                params={},
                as_of=str(AS_OF.date()),
            )
        tracker.set_champion(info)
        folder = tracker.download(kind, tmp_path / f"dl-{kind}")
        expected = predict(f.folder, f.input_example)
        pd.testing.assert_frame_equal(expected, predict(folder, f.input_example))
        pyfunc = mlflow.pyfunc.load_model(f"models:/shopml-{kind}@champion")
        got = pd.DataFrame(pyfunc.predict(f.input_example))
        assert len(got) == len(expected)
