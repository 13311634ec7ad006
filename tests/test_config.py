"""Experiment files: validated on load, with clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from shopml.config import ConfigError, load_experiment, store_uri, tracking_uri


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    return path


def test_shipped_experiments_load() -> None:
    root = Path(__file__).resolve().parents[1] / "experiments"
    for path in sorted(root.glob("*.yaml")):
        exp = load_experiment(path)
        assert exp.models and exp.data.path


def test_overrides_and_defaults(tmp_path: Path) -> None:
    exp = load_experiment(write(tmp_path, "data: {path: x}\n"), as_of="2024-01-31")
    assert str(exp.as_of) == "2024-01-31"
    assert exp.models == ("churn", "repurchase", "demand", "recommender")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("data: {path: x}\nmodels: [telepathy]\n", "models"),
        ("data: {path: x}\nchurn_days: 60\n", "churn_days: Extra inputs"),  # not a setting
        ("data: {path: x}\ncolour: red\n", "colour"),
        ("models: [churn]\n", "data"),
        ("data: [unclosed\n", "not valid YAML"),
        ("- a list\n", "mapping at the top level"),
        ("data: {path: x, format: excel}\n", "format"),
        ("data: {path: x}\nparams: {churnn: {num_boost_round: 10}}\n", "churnn"),
    ],
)
def test_bad_experiment_files(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_experiment(write(tmp_path, text))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_experiment(tmp_path / "nope.yaml")


def test_tracking_uri_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOPML_TRACKING_URI", "http://127.0.0.1:5000")
    assert tracking_uri() == "http://127.0.0.1:5000"
    monkeypatch.delenv("SHOPML_TRACKING_URI")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking_uri().startswith("sqlite:///") and tracking_uri().endswith("mlflow.db")


def test_a_plain_folder_is_a_local_store_like_the_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MLflow 3 refuses a bare path (a deprecated file store); shopml reads it as a folder."""
    assert store_uri(str(tmp_path / "store")) == f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    for uri in (
        "sqlite:///x/mlflow.db",
        "postgresql://u@h/db",
        "http://127.0.0.1:5000",
        "databricks",
    ):
        assert store_uri(uri) == uri
    monkeypatch.setenv("SHOPML_TRACKING_URI", str(tmp_path / "env-store"))
    assert tracking_uri() == f"sqlite:///{tmp_path / 'env-store' / 'mlflow.db'}"
