"""Experiment configuration: a frozen pydantic model loaded from YAML and validated on load."""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path
from typing import Any, Literal, cast

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from features.adapters import validation_summary

ModelKind = Literal["churn", "repurchase", "demand", "recommender"]
MODEL_KINDS: tuple[ModelKind, ...] = ("churn", "repurchase", "demand", "recommender")

#: Where the local MLflow store lives unless SHOPML_TRACKING_URI / MLFLOW_TRACKING_URI says else.
DEFAULT_STORE = Path(".mlflow")


class ConfigError(ValueError):
    """An experiment file that cannot be used (unreadable, unknown keys, bad values)."""


class DataConfig(BaseModel):
    """Where the orders come from and how to read them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str = Field(description="data folder, orders file or SQLAlchemy URL")
    format: Literal["auto", "contract", "online-retail", "cdnow"] = "auto"
    mapping: str | None = None
    sql_table: str | None = None
    sql_query: str | None = None


class Experiment(BaseModel):
    """One training configuration (``experiments/*.yaml``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = "shopml"
    data: DataConfig
    as_of: date | None = Field(None, description="default: the day after the last order")
    models: tuple[ModelKind, ...] = MODEL_KINDS
    params: dict[ModelKind, dict[str, Any]] = Field(
        default_factory=dict, description="per model kind: settings of its model class"
    )

    def model_params(self, kind: str) -> dict[str, Any]:
        """A copy of the settings of ``kind``'s model class (empty when not set)."""
        return dict(self.params.get(cast(ModelKind, kind), {}))


def load_experiment(path: str | Path, **overrides: Any) -> Experiment:
    """Read and validate an experiment YAML file (relative data paths: from the working folder)."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: experiment file not found") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    raw.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return Experiment.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {validation_summary(exc)}") from exc


def tracking_uri(store: Path | None = None) -> str:
    """The MLflow tracking URI: env SHOPML_TRACKING_URI, MLFLOW_TRACKING_URI, else local SQLite."""
    for var in ("SHOPML_TRACKING_URI", "MLFLOW_TRACKING_URI"):
        if os.environ.get(var):
            return store_uri(os.environ[var])
    folder = (store or DEFAULT_STORE).resolve()
    return f"sqlite:///{folder / 'mlflow.db'}"


def store_uri(uri: str) -> str:
    """``uri`` as MLflow takes it: a plain folder path (no scheme) is a local store like the
    default one, a SQLite file ``mlflow.db`` with an ``artifacts`` folder inside it (MLflow's own
    reading of a path, a file store, is deprecated and refused by MLflow 3)."""
    if ":" in uri or uri in ("databricks", "databricks-uc"):
        return uri
    return f"sqlite:///{Path(uri).expanduser().resolve() / 'mlflow.db'}"


def artifact_root(store: Path | None = None) -> str:
    """Artifact location for new experiments in the local store (a folder beside the database)."""
    if os.environ.get("SHOPML_ARTIFACT_ROOT"):
        return os.environ["SHOPML_ARTIFACT_ROOT"]
    return ((store or DEFAULT_STORE).resolve() / "artifacts").as_uri()
