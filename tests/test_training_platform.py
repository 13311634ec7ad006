"""The MLflow platform: full training into a temporary store, registry, champion alias, gate."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import pytest
from conftest import run_with_fresh_bentoml

from features.io import Dataset, load_dataset
from features.schema import ITEM_ID, STOCK_ON_HAND
from features.synthetic import ShopConfig, write_shop
from shopml.artifacts.registry import load_artifact
from shopml.config import DataConfig, Experiment
from training.jobs import check_params
from training.tracking import Tracker, VersionInfo, decide
from training.train import train

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def shop(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("shop") / "demo"
    write_shop(ShopConfig(n_customers=600, n_items=80, seed=5), out, progress=False)
    return out


@pytest.fixture(scope="module")
def dataset(shop: Path) -> Dataset:
    return load_dataset(shop)


def experiment(shop: Path, **params: dict) -> Experiment:
    return Experiment.model_validate(
        {"name": "test", "data": DataConfig(path=str(shop)), "params": params}
    )


def test_full_training_registers_and_promotes(shop: Path, dataset: Dataset, tmp_path: Path) -> None:
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", experiment="test")
    started = datetime.now(UTC).replace(microsecond=0)
    results = train(
        experiment(shop), tracker, dataset=dataset, kinds=("churn", "demand"), threads=1
    )
    assert [r.kind for r in results] == ["churn", "demand"]
    for r in results:
        assert r.decision.promote and r.decision.reason == "no champion yet"
        champion = tracker.champion(r.kind)
        assert champion is not None and champion.version == r.version.version
        assert champion.trained_at is not None and champion.trained_at.endswith("+00:00")
        assert started <= datetime.fromisoformat(champion.trained_at) <= datetime.now(UTC)
        folder = tracker.download(r.kind, tmp_path / f"dl-{r.kind}")
        assert (folder / "meta.json").exists()
        load_artifact(folder)  # servable without training code
    # the parent run has nested runs with metrics and plots
    runs = mlflow.search_runs(experiment_ids=[tracker.experiment_id], output_format="pandas")
    assert len(runs) == 3
    churn_run = runs[runs["tags.model_kind"] == "churn"].iloc[0]
    assert 0.5 < churn_run["metrics.shopml.roc_auc"] <= 1.0
    # the process's peak memory after each kind: never lower for a later kind, logged per run
    assert 0 < results[0].peak_rss_gb <= results[1].peak_rss_gb
    assert churn_run["metrics.peak_rss_gb"] == pytest.approx(results[0].peak_rss_gb)
    assert "metrics.recency.roc_auc" in runs.columns
    plots = [a.path for a in tracker.client.list_artifacts(churn_run["run_id"], "plots")]
    assert sorted(plots) == ["plots/calibration.png", "plots/gains.png", "plots/roc.png"]
    # batch users load the registered pyfunc
    model = mlflow.pyfunc.load_model("models:/shopml-churn@champion")
    ids = load_artifact(folder_of(tracker, "churn", tmp_path)).artifact.scores["customer_id"][:5]
    out = model.predict(pd.DataFrame({"customer_id": ids}))
    assert len(out) == 5 and out["churn_proba"].between(0, 1).all()
    assert {"value", "value_at_risk", "segment", "reasons"} <= set(out.columns)


def test_trained_at_reaches_the_bentoml_store(shop: Path, dataset: Dataset, tmp_path: Path) -> None:
    """The champion's training time travels MLflow tag -> BentoML metadata -> /v1/models."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    tracker = Tracker(uri, experiment="test")
    train(experiment(shop), tracker, dataset=dataset, kinds=("demand",), threads=1)
    champion = tracker.champion("demand")
    assert champion is not None and champion.trained_at is not None
    script = (
        "import sys\n"
        "from shopml.deploy import pack_champions\n"
        "from serving.models import find_models\n"
        "pack_champions(sys.argv[1])\n"
        "print(find_models(('demand',))['demand'].metadata.get('trained_at'))\n"
    )
    assert run_with_fresh_bentoml(script, uri, tmp_path / "bentoml") == champion.trained_at


def folder_of(tracker: Tracker, kind: str, tmp_path: Path) -> Path:
    return tracker.download(kind, tmp_path / f"again-{kind}")


def test_retrain_on_same_data_keeps_champion_and_worse_config_is_refused(
    shop: Path, dataset: Dataset, tmp_path: Path
) -> None:
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", experiment="test")
    (first,) = train(experiment(shop), tracker, dataset=dataset, kinds=("churn",), threads=1)
    (same,) = train(experiment(shop), tracker, dataset=dataset, kinds=("churn",), threads=1)
    assert not same.decision.promote
    assert "does not beat" in same.decision.reason
    weak = experiment(shop, churn={"features": ["tenure_days"], "baselines": ()})
    (worse,) = train(weak, tracker, dataset=dataset, kinds=("churn",), threads=1)
    assert worse.backtest.value < first.backtest.value
    assert not worse.decision.promote
    champion = tracker.champion("churn")
    assert champion is not None and champion.version == first.version.version
    tags = tracker.client.get_model_version("shopml-churn", worse.version.version).tags
    assert "does not beat" in tags["gate_decision"]


def info(value: float, key: str = "k", params: dict | None = None) -> VersionInfo:
    return VersionInfo("churn", "1", "run", "roc_auc", value, True, key, params or {}, "2024-01-01")


@pytest.mark.parametrize(
    ("candidate", "champion", "key", "refit", "promote"),
    [
        (0.7, None, "k", None, True),  # no champion
        (0.8, info(0.7), "k", None, True),  # same backtest, better
        (0.7, info(0.7), "k", None, False),  # same backtest, equal: not better
        (0.6, info(0.7), "k", None, False),  # same backtest, worse
        (0.7, info(0.9), "new", 0.7, True),  # new data: as good as the refitted champion config
        (0.6, info(0.5), "new", 0.7, False),  # new data: worse than the refitted champion config
        (0.9, info(0.5), "new", None, False),  # new data, champion not re-evaluated: keep
    ],
)
def test_gate(
    candidate: float, champion: VersionInfo | None, key: str, refit: float | None, promote: bool
) -> None:
    decision = decide(
        candidate,
        champion,
        backtest_key=key,
        higher_is_better=True,
        champion_value_on_candidate_backtest=refit,
    )
    assert decision.promote is promote
    assert decision.reason


def test_gate_lower_is_better() -> None:
    champ = VersionInfo("demand", "3", "r", "mase", 1.2, False, "k", {}, None)
    assert decide(1.1, champ, backtest_key="k", higher_is_better=False).promote
    assert not decide(1.3, champ, backtest_key="k", higher_is_better=False).promote


def test_unknown_kind_is_refused(shop: Path, dataset: Dataset, tmp_path: Path) -> None:
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", experiment="test")
    with pytest.raises(ValueError, match="unknown model kind"):
        train(experiment(shop), tracker, dataset=dataset, kinds=("telepathy",))


def test_model_params_are_converted_to_their_types() -> None:
    """YAML has no tuples and may quote numbers: settings arrive as the constructor's types."""
    assert check_params("recommender", {"factors": "32", "ranker_cutoffs": [[90, 90]]}) == {
        "factors": 32,
        "ranker_cutoffs": ((90, 90),),
    }
    assert check_params("churn", {}) == {}


@pytest.mark.parametrize(
    ("kind", "params", "message"),
    [
        ("recommender", {"bogus": 1}, "params.recommender: .*unexpected keyword argument 'bogus'"),
        ("recommender", {"als_fits": 0}, "params.recommender: als_fits"),
        ("churn", {"cutoffs_per_month": 0}, "params.churn: cutoffs_per_month"),
        ("demand", {"nonsense": True}, "params.demand: .*'nonsense'"),
        ("churn", {"num_boost_round": "x"}, "params.churn.num_boost_round: .*valid integer"),
        ("churn", {"n_snapshots": 0}, "params.churn: n_snapshots must be >= 1"),
        ("repurchase", {"features": "recency_days"}, "params.repurchase.features: .*list"),
        ("demand", {"season_pace": "weekly"}, "params.demand: season_pace must be one of"),
        ("demand", {"bulk_cap": 0.5}, "params.demand: bulk_cap"),
    ],
)
def test_bad_model_params_are_refused_before_any_run(
    shop: Path, dataset: Dataset, tmp_path: Path, kind: str, params: dict, message: str
) -> None:
    """A typo in an experiment's params fails at once, naming the key: no run, no version."""
    db = tmp_path / "mlflow.db"
    tracker = Tracker(f"sqlite:///{db}", experiment="test")
    exp = experiment(shop, **{kind: params})
    with pytest.raises(ValueError, match=message):
        train(exp, tracker, dataset=dataset, kinds=(kind,))
    assert tracker.champion(kind) is None
    assert mlflow.search_runs(experiment_names=["test"]).empty


def test_score_writes_batch_outputs_and_logs_them(
    shop: Path, dataset: Dataset, tmp_path: Path
) -> None:
    from training.score import score

    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", experiment="test")
    with pytest.raises(ValueError, match="no champion"):
        score(tracker, tmp_path / "none")
    assert not (tmp_path / "none").exists()
    assert dataset.items is not None
    no_stock = dataclasses.replace(dataset, items=dataset.items.drop(columns=STOCK_ON_HAND))
    train(experiment(shop), tracker, dataset=no_stock, kinds=("churn", "demand"), threads=1)
    counts = score(tracker, tmp_path / "scores", lead_time_weeks=3, service_level=0.9)
    customers = pd.read_parquet(tmp_path / "scores" / "customers.parquet")
    inventory = pd.read_parquet(tmp_path / "scores" / "inventory.parquet")
    assert counts == {
        "customers": len(customers),
        "forecasts": counts["forecasts"],
        "inventory": len(inventory),
    }
    assert customers["customer_id"].is_unique
    # the API's names, in an order a marketing spreadsheet reads left to right
    assert list(customers.columns) == [
        "customer_id",
        "segment",
        "churn_probability",
        "value",
        "value_at_risk",
        "churn_reasons",
        "as_of",
    ]
    forecasts = pd.read_parquet(tmp_path / "scores" / "forecasts.parquet")
    assert list(forecasts.columns) == [
        "item_id",
        "week_ending",
        "weeks_ahead",
        "p10",
        "p50",
        "p90",
        "point_forecast",
        "share_ahead",
    ]
    assert sorted(forecasts["weeks_ahead"].unique()) == list(range(1, 13))
    assert (inventory["reorder_point"] >= inventory["safety_stock"]).all()
    assert (inventory["lead_time_weeks"] == 3).all() and (inventory["service_level"] == 0.9).all()
    # no stock known: nothing is "out of stock" (a stock of 0 flagged every item before)
    assert inventory["stock_on_hand"].isna().all()
    for col in ("stockout_probability", "order_quantity", "stockout_risk", "revenue_at_risk"):
        assert inventory[col].isna().all(), col
    # stock for two items: the others stay unknown, an empty shelf is at risk, a full one is not
    first, second = inventory["item_id"][:2]
    score(
        tracker,
        tmp_path / "scores",
        lead_time_weeks=3,
        service_level=0.9,
        stock_on_hand=pd.Series({first: 0.0, second: 1e6}),
    )
    stocked = pd.read_parquet(tmp_path / "scores" / "inventory.parquet").set_index("item_id")
    assert stocked["stock_on_hand"].notna().sum() == 2
    assert stocked.loc[first, "stockout_risk"] and stocked.loc[first, "stockout_probability"] > 0.5
    assert not stocked.loc[second, "stockout_risk"] and stocked.loc[second, "overstock"]
    assert stocked.loc[second, "order_quantity"] == 0
    assert stocked["stockout_risk"].isna().sum() == len(stocked) - 2
    runs = mlflow.search_runs(
        experiment_ids=[tracker.experiment_id], filter_string="attributes.run_name = 'score'"
    )
    assert len(runs) == 2
    logged = [a.path for a in tracker.client.list_artifacts(runs["run_id"][0], "batch")]
    assert sorted(logged) == [
        "batch/customers.parquet",
        "batch/forecasts.parquet",
        "batch/inventory.parquet",
    ]


def test_score_takes_the_item_tables_stock_unless_items_gives_one(
    shop: Path, dataset: Dataset, tmp_path: Path
) -> None:
    """Batch reorder advice uses the stock of the items table the model was trained with, as the
    forecast endpoint does; ``--items`` overrides it item by item."""
    from training.score import score

    assert dataset.items is not None
    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", experiment="test")
    train(experiment(shop), tracker, dataset=dataset, kinds=("demand",), threads=1)
    table = dataset.items.set_index(dataset.items[ITEM_ID].astype(str))[STOCK_ON_HAND]
    score(tracker, tmp_path / "a", lead_time_weeks=2, service_level=0.95)
    inventory = pd.read_parquet(tmp_path / "a" / "inventory.parquet").set_index("item_id")
    expected = table.reindex(inventory.index).to_numpy(dtype=float)
    assert inventory["stock_on_hand"].notna().all()
    assert inventory["stock_on_hand"].to_numpy() == pytest.approx(expected)
    assert inventory["stockout_probability"].notna().all()
    first = inventory.index[0]
    score(
        tracker,
        tmp_path / "b",
        lead_time_weeks=2,
        service_level=0.95,
        stock_on_hand=pd.Series({first: 123456.0}),
    )
    again = pd.read_parquet(tmp_path / "b" / "inventory.parquet").set_index("item_id")
    assert again.loc[first, "stock_on_hand"] == 123456.0
    assert again["stock_on_hand"].drop(first).to_numpy() == pytest.approx(expected[1:])


def test_reason_codes_are_distinct_phrases(shop: Path, dataset: Dataset, tmp_path: Path) -> None:
    from training.jobs import ChurnJob

    fitted = ChurnJob(threads=1).fit(dataset, pd.Timestamp("2024-11-01"), {}, tmp_path / "m")
    scores = load_artifact(fitted.folder).artifact.scores
    for text in scores["reasons"].head(200):
        phrases = [p for p in str(text).split("; ") if p]
        assert len(phrases) == len(set(phrases)) <= 3


def test_a_served_baseline_explains_against_the_reference(
    shop: Path, dataset: Dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """When the BG/NBD baseline is served (LightGBM lost on validation) its reasons are
    contributions relative to the population's reference customers stored at fit time: its
    raw score (log-odds) is not centred, so below-zero customers used to get no reason."""
    from training.customers import ChurnModel
    from training.jobs import ChurnJob

    real_fit = ChurnModel.fit

    def fit_baseline(self: ChurnModel, orders: Any, as_of: Any, **tables: Any) -> ChurnModel:
        real_fit(self, orders, as_of, **tables)
        base = next(a for a in self.candidates_.values() if a.kind == "baseline-bgnbd")
        self.artifact_, self.chosen_ = base, "bgnbd"
        self.artifact_.scores = self.score_table(
            orders, as_of, items=tables.get("items"), customers=tables.get("customers")
        )
        return self

    monkeypatch.setattr(ChurnModel, "fit", fit_baseline)
    fitted = ChurnJob(threads=1).fit(dataset, pd.Timestamp("2024-11-01"), {}, tmp_path / "m")
    art = load_artifact(fitted.folder).artifact
    assert art.kind == "baseline-bgnbd"
    assert {k: len(v) for k, v in art.reference.items()} == {
        "repeat_days": 16,
        "recency_days": 16,
        "tenure_days": 16,
    }
    scores = art.scores
    risky = scores["churn_proba"] >= scores["churn_proba"].quantile(0.7)
    empty = scores.loc[risky & (scores["reasons"] == "")]
    assert empty.empty, empty.head().to_dict()
    assert (scores["reasons"] == "").mean() < 0.5
    assert scores["value_at_risk"].notna().all()  # the rescored table still joins the value


def test_forecast_plot_shows_steady_sellers_not_one_off_orders() -> None:
    """The forecast plot's 'top items' were the largest all-history totals: on Online Retail
    23166 (one 74,215-unit order in January, returned the same day) was the first panel."""
    import numpy as np

    from training.jobs import TOP_WEEKS, top_sellers

    weeks = 52
    hist = np.zeros((4, weeks))
    hist[0, 3] = 74215.0  # one-off, long before the last 26 weeks
    hist[1, -TOP_WEEKS:] = 100.0  # steady seller
    hist[2, -TOP_WEEKS:] = 50.0
    hist[2, -1] = 3000.0  # steady, one recent spike: median 50
    hist[3, -5:] = 400.0  # new item, 5 weeks: median 0
    assert top_sellers(hist, 3).tolist() == [1, 2, 3]
    assert top_sellers(hist, 4).tolist() == [1, 2, 3, 0]


def test_demand_example_items_are_sellers(dataset: Dataset, tmp_path: Path) -> None:
    """The registered model's input example (and the CLI's curl example) took the first items
    by id: on Online Retail 10002, forecast 0 units every week."""
    from shopml.artifacts.demand import DemandArtifact
    from training.jobs import DemandJob

    fitted = DemandJob(threads=1).fit(dataset, pd.Timestamp("2024-11-01"), {}, tmp_path / "d")
    art = DemandArtifact.load(fitted.folder)
    p50 = pd.Series(art.forecast_arrays(art.items, 1)["p50"][:, 0], index=art.items)
    example = fitted.input_example["item_id"].tolist()
    assert example == p50.sort_values(ascending=False, kind="stable").index[:3].tolist()
    assert (p50[example] > 0).all()


def test_small_shares_are_not_labelled_zero() -> None:
    """Catalogue coverage of popularity on 3,600 items (10 of them) read '0%'."""
    from training import plots

    assert plots.share_label(10 / 3600) == "0.28%"
    assert plots.share_label(0.0) == "0%"
    assert plots.share_label(0.05) == "5%"
    assert plots.share_label(0.37) == "37%"
    fig = plots.bars({"shopml": 0.37, "popularity-90d": 10 / 3600}, "share", "t", share=True)
    labels = [t.get_text() for t in fig.axes[0].texts]
    assert labels == ["37%", "0.28%"]


def test_versions_record_the_data_they_were_trained_on(
    shop: Path, dataset: Dataset, tmp_path: Path
) -> None:
    from features.io import folder_fingerprint

    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", experiment="test")
    train(experiment(shop), tracker, dataset=dataset, kinds=("repurchase",), threads=1)
    champion = tracker.champion("repurchase")
    assert champion is not None and champion.data_sha == folder_fingerprint(shop)
    assert folder_fingerprint(tmp_path / "elsewhere") is None


def test_sqlite_store_keeps_its_artifacts_beside_the_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SHOPML_ARTIFACT_ROOT", raising=False)
    store = tmp_path / "elsewhere"
    store.mkdir()
    tracker = Tracker(f"sqlite:///{store / 'mlflow.db'}", experiment="where")
    location = tracker.client.get_experiment(tracker.experiment_id).artifact_location
    assert location == (store / "artifacts").as_uri()


def test_plots_read_on_their_own() -> None:
    """Titles, axis labels, ticks and legends a reader needs (known answers)."""
    import matplotlib.pyplot as plt
    import numpy as np

    from training import plots

    rng = np.random.default_rng(0)
    y = (rng.random(400) < 0.3).astype(int)
    scores = {"shopml": y + rng.random(400), "recency": rng.random(400)}
    gains = plots.gains(y, scores, "Cumulative gains: churn", positives="churners")
    ax = gains.axes[0]
    assert ax.get_ylabel() == "share of churners found"  # was "positives"
    shopml_line = next(li for li in ax.get_lines() if str(li.get_label()).startswith("shopml"))
    assert shopml_line.get_zorder() > max(
        li.get_zorder() for li in ax.get_lines() if li is not shopml_line
    )  # drawn over the baselines
    cal = plots.calibration(y, rng.random(400), "Reliability: churn", outcome="churn")
    assert cal.axes[0].get_ylabel() == "observed churn rate"
    assert cal.axes[1].get_xlabel() == "predicted probability of churn"
    # NDCG@k at k = 1, 3, 5, 10, 20: ticks at those k (were 2.5, 5.0, 7.5, ...)
    ks = [1, 3, 5, 10, 20]
    fig = plots.metric_vs_k(ks, {"shopml": [0.5] * 5, "popularity": [0.3] * 5}, "NDCG@k", "t")
    assert list(fig.axes[0].get_xticks()) == ks
    # coverage by horizon: the nominal level is a dashed reference line, not a model curve
    fig = plots.by_horizon(
        range(1, 13), {"shopml [P10, P90]": [0.8] * 12}, "share", "t", {"nominal 80%": 0.8}
    )
    lines = {li.get_label(): li for li in fig.axes[0].get_lines()}
    assert lines["nominal 80%"].get_linestyle() == "--"
    assert lines["nominal 80%"].get_marker() in ("None", "", None)
    assert lines["shopml [P10, P90]"].get_linewidth() > 2
    # bars carry their values; a share is shown in percent
    fig = plots.bars({"shopml": 0.97, "popularity": 0.02}, "share", "t", share=True)
    assert [t.get_text() for t in fig.axes[0].texts] == ["97%", "2%"]
    # forecast panels: y in units per week on the left column, week ending under the lowest
    weeks = [f"2024-10-{d:02d}" for d in (6, 13, 20, 27)]
    series = {
        f"I{i} Deluxe Knife": (np.ones(4), np.zeros(4), np.ones(4), 2 * np.ones(4))
        for i in range(4)
    }
    fig = plots.forecast_vs_actual(weeks, series, "Top items")
    axes = fig.axes
    assert [a.get_ylabel() for a in axes[:4]] == ["units per week", "", "", "units per week"]
    assert [a.get_xlabel() for a in axes[:4]] == ["", "week ending", "week ending", "week ending"]
    assert axes[0].get_title() == "I0 Deluxe Knife"
    # a long title is wrapped inside the figure (it was cut off at both edges)
    long = "Cumulative gains: repurchase within 30 days (2024-12-02..2025-01-01)"
    fig = plots.gains(y, scores, long, positives="repeat buyers")
    fig.canvas.draw()
    box = fig.axes[0].title.get_window_extent()
    assert box.x0 >= 0 and box.x1 <= fig.bbox.x1
    assert fig.axes[0].get_title().replace("\n", " ") == long
    plt.close("all")


def test_training_console_says_what_runs_without_library_noise(
    shop: Path,
    dataset: Dataset,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """MLflow's registry prints stay off stderr, each snapshot's line is DEBUG with one INFO
    summary per customer fit, and ``progress`` hears every stage of every model in order."""
    import logging

    tracker = Tracker(f"sqlite:///{tmp_path / 'mlflow.db'}", experiment="test")
    capfd.readouterr()
    seen: list[tuple[int, int, str]] = []
    with caplog.at_level(logging.DEBUG):
        results = train(
            experiment(shop),
            tracker,
            dataset=dataset,
            kinds=("churn", "recommender"),
            threads=1,
            progress=lambda done, total, text: seen.append((done, total, text)),
        )
    err = capfd.readouterr().err
    assert "Successfully registered model" not in err and "Created version" not in err
    # the capture does see them when MLflow prints them (a bare registration)
    mlflow.register_model(f"runs:/{results[0].version.run_id}/model", "shopml-bare")
    bare = capfd.readouterr().err
    assert "Successfully registered model 'shopml-bare'." in bare
    assert "Created version '1' of model 'shopml-bare'." in bare

    def records(prefix: str) -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.getMessage().startswith(prefix)]

    per_date = records("user features at ")
    assert per_date and {r.levelno for r in per_date} == {logging.DEBUG}
    ranker = records("snapshot ")
    assert ranker and {r.levelno for r in ranker} == {logging.DEBUG}
    summaries = records("churn fit as of ")  # the backtest's fit and the served one
    assert len(summaries) == 2 and {r.levelno for r in summaries} == {logging.INFO}
    assert all(" snapshots (" in r.getMessage() for r in summaries)
    decided = records("churn: version 1 promoted to champion: no champion yet (")
    assert len(decided) == 1 and "backtest" in decided[0].getMessage()
    stages = ["backtest", "fit", "log and register", "promotion gate"]
    expected = [
        (i * 4 + j, 8, f"{kind} ({i + 1}/2): {stage}")
        for i, kind in enumerate(["churn", "recommender"])
        for j, stage in enumerate(stages)
    ]
    assert seen == [*expected, (8, 8, "done")]


def test_quiet_registry_keeps_mlflow_warnings(
    capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    import logging

    from mlflow.utils import logging_utils

    from training.tracking import quiet_registry

    capfd.readouterr()
    with caplog.at_level(logging.WARNING), quiet_registry():
        logging_utils.eprint("Created version '9' of model 'x'.")
        logging.getLogger("mlflow.tracking").warning("registry trouble")
    assert "Created version" not in capfd.readouterr().err
    assert "registry trouble" in caplog.text  # reached the application's handlers
    assert logging_utils.MLFLOW_LOGGING_STREAM.enabled
    assert logging.getLogger("mlflow").propagate is False
    logging_utils.eprint("printed again")
    assert "printed again" in capfd.readouterr().err


@pytest.mark.parametrize(
    ("val_ok", "now_ok", "chosen", "blend", "expected"),
    [
        (True, True, "lightgbm", True, None),
        (
            False,
            False,
            "lightgbm",
            False,
            "churn: BG/NBD did not converge at the validation cutoff 2011-08-01 and 2011-12-10 "
            "(parameter(s) a on the bound): it is not eligible to be served nor blended with "
            "LightGBM; its backtest score is a reference only (serving lightgbm)",
        ),
        (
            True,
            False,
            "lightgbm",
            True,
            "churn: BG/NBD did not converge at 2011-12-10 (parameter(s) a on the bound): "
            "lightgbm is served with these parameters, noted in the model's notes",
        ),
        (
            True,
            False,
            "lightgbm",
            False,
            "churn: BG/NBD did not converge at 2011-12-10 (parameter(s) a on the bound): not used "
            "(serving lightgbm)",
        ),
    ],
)
def test_unconverged_bgnbd_is_one_line_saying_what_is_done(
    caplog: pytest.LogCaptureFixture,
    val_ok: bool,
    now_ok: bool,
    chosen: str,
    blend: bool,
    expected: str | None,
) -> None:
    import logging

    from training.btyd import BtydFit
    from training.customers import ChurnModel

    def fit(ok: bool) -> BtydFit:
        return BtydFit({"a": 1e-4}, -1.0, ok, "" if ok else "parameter(s) a on the bound", [])

    model = ChurnModel()
    model.bgnbd_fit_ = fit(now_ok)
    with caplog.at_level(logging.INFO, logger="training.customers"):
        model._report_bgnbd(
            fit(val_ok), pd.Timestamp("2011-08-01"), pd.Timestamp("2011-12-10"), chosen, blend
        )
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert lines == ([] if expected is None else [expected])
