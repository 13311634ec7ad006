"""The only module that talks to MLflow: runs, metrics, plots, model registry and the gate.

Registered models are ``shopml-<kind>``; the ``champion`` alias marks the served version. Every
version carries tags with its gate metric, backtest key and parameters so the promotion gate can
compare a candidate with the champion on the same backtest.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from shopml.config import artifact_root, store_uri, tracking_uri

log = logging.getLogger(__name__)

CHAMPION = "champion"
PYFUNC_ENTRY = Path(__file__).with_name("pyfunc_entry.py")
PIP_REQUIREMENTS = [
    "numpy==2.4.6",
    "pandas==3.1.1",
    "pyarrow==25.0.1",
    "lightgbm==4.7.0",
    "scipy==1.17.1",
    "shopml",
]


class TrackingStoreError(RuntimeError):
    """The tracking store cannot be reached or written (the message never holds a password)."""


class PromotionRefused(RuntimeError):
    """A registered version whose artifact cannot be loaded back from the registry."""


def safe_uri(uri: str) -> str:
    """``uri`` with any password masked (``postgresql://user:***@host/db``)."""
    from urllib.parse import urlsplit, urlunsplit

    try:
        parts = urlsplit(uri)
        if parts.password is None:
            return uri
        host = parts.hostname or ""
        if parts.port is not None:
            host = f"{host}:{parts.port}"
        netloc = f"{parts.username or ''}:***@{host}"
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    except ValueError:
        return "<unparseable URI>"


def _scrub(text: str, uri: str) -> str:
    """``text`` with the password of ``uri`` (and the raw URI) replaced."""
    from urllib.parse import unquote, urlsplit

    try:
        password = urlsplit(uri).password
    except ValueError:
        password = None
    text = text.replace(uri, safe_uri(uri))
    for secret in {password, unquote(password or "")} - {None, ""}:
        text = text.replace(str(secret), "***")
    return text


@contextmanager
def _init_lock(uri: str) -> Iterator[None]:
    """Serialise opening a SQLite store across processes (``<db>.lock``, an flock).

    Two trainings starting at once on a fresh store both ran MLflow's table migrations and both
    failed (``table _alembic_tmp_metrics already exists``); they also raced to create the
    experiment. Other stores (PostgreSQL, MySQL) are opened without a lock.
    """
    if not uri.startswith("sqlite:///"):
        yield
        return
    import fcntl

    db = Path(uri.removeprefix("sqlite:///"))
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(db.name + ".lock"), "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _sqlite_artifact_root(uri: str) -> str | None:
    """Artifacts of a SQLite store go to the ``artifacts`` folder beside its database file
    (``SHOPML_ARTIFACT_ROOT`` overrides); other stores keep their server's default."""
    if not uri.startswith("sqlite:///"):
        return None
    database = Path(uri.removeprefix("sqlite:///").split("?")[0])
    return artifact_root(database.parent if database.name else None)


def registered_name(kind: str) -> str:
    """Registry name of a model kind: ``shopml-<kind>``."""
    return f"shopml-{kind}"


@dataclass(frozen=True)
class VersionInfo:
    """What the gate and the service need to know about one registered model version."""

    kind: str
    version: str
    run_id: str
    gate_metric: str | None
    gate_value: float | None
    higher_is_better: bool
    backtest_key: str | None
    params: dict[str, Any]
    as_of: str | None
    data_sha: str | None = None
    #: When the training run started, ISO 8601 UTC; None for versions registered before the tag.
    trained_at: str | None = None


@dataclass(frozen=True)
class Decision:
    """The promotion gate's verdict, with the reason in words."""

    promote: bool
    reason: str


class Tracker:
    """An MLflow tracking store (default: local SQLite file and artifact folder)."""

    def __init__(self, uri: str | None = None, experiment: str = "shopml") -> None:
        import mlflow

        self.uri = store_uri(uri) if uri else tracking_uri()
        self.experiment = experiment
        os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        try:
            with _init_lock(self.uri):
                self._connect(mlflow, experiment)
        except Exception as exc:
            reason = _scrub(str(exc).splitlines()[0] if str(exc) else type(exc).__name__, self.uri)
            raise TrackingStoreError(
                f"cannot use the MLflow tracking store {safe_uri(self.uri)}: "
                f"{type(exc).__name__}: {reason}"
            ) from None

    def _connect(self, mlflow: Any, experiment: str) -> None:
        """Open the store (its first use creates the tables) and find or create the experiment."""
        mlflow.set_tracking_uri(self.uri)
        mlflow.set_registry_uri(self.uri)
        self.client = mlflow.MlflowClient(self.uri, self.uri)
        found = self.client.get_experiment_by_name(experiment)
        if found is None:
            location = _sqlite_artifact_root(self.uri)
            self.experiment_id = self.client.create_experiment(experiment, location)
        else:
            self.experiment_id = found.experiment_id

    @contextmanager
    def run(
        self, name: str, *, nested: bool = False, tags: dict[str, str] | None = None
    ) -> Iterator[str]:
        """Start a (nested) run; yields its id. A failure marks the run FAILED."""
        import mlflow

        with mlflow.start_run(
            experiment_id=self.experiment_id, run_name=name, nested=nested, tags=tags
        ) as active:
            yield active.info.run_id

    def log_params(self, params: dict[str, Any]) -> None:
        """Log flat parameters (values stringified; nested dicts flattened with dots)."""
        import mlflow

        mlflow.log_params(_flatten(params))

    def log_metrics(self, metrics: dict[str, float], prefix: str = "") -> None:
        """Log numeric metrics, skipping None and NaN."""
        import math

        import mlflow

        clean = {
            f"{prefix}{k}".replace("@", "_at_"): float(v)
            for k, v in metrics.items()
            if v is not None and not (isinstance(v, float) and math.isnan(v))
        }
        mlflow.log_metrics(clean)

    def log_dict(self, obj: Any, path: str) -> None:
        """Log a JSON artifact."""
        import mlflow

        mlflow.log_dict(json.loads(json.dumps(obj, default=str)), path)

    def log_figure(self, figure: Any, path: str) -> None:
        """Log a matplotlib figure as a PNG artifact and close it."""
        import matplotlib.pyplot as plt
        import mlflow

        mlflow.log_figure(figure, path)
        plt.close(figure)

    def log_artifact_file(self, path: Path, artifact_path: str | None = None) -> None:
        """Log a local file (e.g. a batch-score Parquet file)."""
        import mlflow

        mlflow.log_artifact(str(path), artifact_path)

    def log_model(
        self,
        kind: str,
        folder: Path,
        input_example: pd.DataFrame,
        *,
        gate_metric: str,
        gate_value: float,
        higher_is_better: bool,
        backtest_key: str,
        params: dict[str, Any],
        as_of: str,
        data_sha: str = "",
    ) -> VersionInfo:
        """Log a saved model folder as a pyfunc (model from code) and register a new version.

        Registration happens after the whole model is logged, so a failure part-way leaves no
        registered version behind.
        """
        import mlflow
        from mlflow.models import infer_signature

        from shopml.artifacts.registry import load_artifact

        output = load_artifact(folder).predict_frame(input_example)
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*integer column", category=UserWarning)
                signature = infer_signature(input_example, output)
                info = self._log_pyfunc(folder, input_example, signature)
        except Exception as exc:  # disk full, artifact store unwritable, store gone
            reason = _scrub(f"{type(exc).__name__}: {str(exc)[:300]}", self.uri)
            raise TrackingStoreError(
                f"logging the {kind} model to {safe_uri(self.uri)} failed ({reason}); "
                "no model version was registered"
            ) from exc
        tags = {
            "gate_metric": gate_metric,
            "gate_value": repr(float(gate_value)),
            "higher_is_better": str(higher_is_better),
            "backtest_key": backtest_key,
            "params": json.dumps(params, sort_keys=True, default=str),
            "as_of": as_of,
            "data_sha": data_sha,
            "trained_at": self._run_start(info.run_id),
        }
        with quiet_registry():  # shopml reports the version itself (`churn: version 3 ...`)
            version = mlflow.register_model(info.model_uri, registered_name(kind), tags=tags)
        return self._info(kind, version)

    @staticmethod
    def _log_pyfunc(folder: Path, input_example: pd.DataFrame, signature: Any) -> Any:
        import mlflow

        return mlflow.pyfunc.log_model(
            name="model",
            python_model=str(PYFUNC_ENTRY),
            artifacts={"model": str(folder)},
            signature=signature,
            input_example=input_example,
            pip_requirements=PIP_REQUIREMENTS,
        )

    def _run_start(self, run_id: str) -> str:
        """Start of MLflow run ``run_id`` as ISO 8601 UTC (``2024-06-01T09:30:00+00:00``)."""
        from datetime import UTC, datetime

        start_ms = self.client.get_run(run_id).info.start_time
        return datetime.fromtimestamp(start_ms / 1000, tz=UTC).isoformat(timespec="seconds")

    def _info(self, kind: str, version: Any) -> VersionInfo:
        tags = version.tags or {}
        value = tags.get("gate_value")
        return VersionInfo(
            kind=kind,
            version=str(version.version),
            run_id=version.run_id,
            gate_metric=tags.get("gate_metric"),
            gate_value=float(value) if value is not None else None,
            higher_is_better=tags.get("higher_is_better", "True") == "True",
            backtest_key=tags.get("backtest_key"),
            params=json.loads(tags.get("params", "{}")),
            as_of=tags.get("as_of"),
            data_sha=tags.get("data_sha"),
            trained_at=tags.get("trained_at"),
        )

    def champion(self, kind: str) -> VersionInfo | None:
        """The version the ``champion`` alias points at, or None."""
        from mlflow.exceptions import MlflowException

        try:
            version = self.client.get_model_version_by_alias(registered_name(kind), CHAMPION)
        except MlflowException:
            return None
        return self._info(kind, version)

    def verify_loadable(self, info: VersionInfo) -> None:
        """Download version ``info`` from the registry and load it; :class:`PromotionRefused` if not.

        Catches what a good folder at logging time cannot: artifacts lost, truncated or
        corrupted in the artifact store after registration.
        """
        import mlflow

        from shopml.artifacts.registry import load_artifact

        uri = f"models:/{registered_name(info.kind)}/{info.version}"
        with scratch_dir() as tmp:
            try:
                local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=tmp))
                folders = [p for p in (local / "artifacts").iterdir() if p.is_dir()]
                if len(folders) != 1:
                    raise FileNotFoundError(f"expected one model folder, found {len(folders)}")
                load_artifact(folders[0])
            except Exception as exc:
                raise PromotionRefused(
                    f"{uri} cannot be loaded from the registry ({type(exc).__name__}: "
                    f"{str(exc)[:300]}); the champion alias was not moved"
                ) from exc

    def set_champion(self, info: VersionInfo) -> None:
        """Move the ``champion`` alias to ``info`` after loading it back from the registry.

        Raises :class:`PromotionRefused` (alias untouched) when the version cannot be loaded.
        """
        self.verify_loadable(info)
        self.client.set_registered_model_alias(registered_name(info.kind), CHAMPION, info.version)

    def tag_version(self, info: VersionInfo, key: str, value: str) -> None:
        """Set a tag on a registered model version (e.g. the gate's decision)."""
        self.client.set_model_version_tag(registered_name(info.kind), info.version, key, value)

    def download(self, kind: str, dst: Path, alias: str = CHAMPION) -> Path:
        """Download the saved model folder of ``kind@alias``; returns its path."""
        import mlflow

        uri = f"models:/{registered_name(kind)}@{alias}"
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dst)))
        folders = [p for p in (local / "artifacts").iterdir() if p.is_dir()]
        if len(folders) != 1:
            raise FileNotFoundError(f"{uri}: expected one model folder in its artifacts")
        return folders[0]


def decide(
    candidate_value: float,
    champion: VersionInfo | None,
    *,
    backtest_key: str,
    higher_is_better: bool,
    champion_value_on_candidate_backtest: float | None = None,
) -> Decision:
    """The promotion gate.

    - no champion yet: promote;
    - same backtest (same data and window) as the champion: promote only when strictly better;
    - a new backtest (new data): the champion's configuration, refitted on the candidate's
      backtest, gives ``champion_value_on_candidate_backtest``; promote when the candidate is at
      least as good (a retrain on newer data with an equally good configuration replaces it).
    """
    if champion is None or champion.gate_value is None:
        return Decision(True, "no champion yet")

    def better(a: float, b: float, strict: bool) -> bool:
        if higher_is_better:
            return a > b if strict else a >= b
        return a < b if strict else a <= b

    if champion.backtest_key == backtest_key:
        ok = better(candidate_value, champion.gate_value, strict=True)
        verb = "beats" if ok else "does not beat"
        return Decision(
            ok,
            f"candidate {champion.gate_metric}={candidate_value:.4f} {verb} champion "
            f"v{champion.version} ({champion.gate_value:.4f}) on the same backtest",
        )
    if champion_value_on_candidate_backtest is None:
        return Decision(
            False, "champion has a different backtest and was not re-evaluated: kept champion"
        )
    ok = better(candidate_value, champion_value_on_candidate_backtest, strict=False)
    verb = "is at least as good as" if ok else "is worse than"
    return Decision(
        ok,
        f"candidate {champion.gate_metric}={candidate_value:.4f} {verb} champion v{champion.version}'s "
        f"configuration refitted on the same backtest ({champion_value_on_candidate_backtest:.4f})",
    )


@contextmanager
def quiet_registry() -> Iterator[None]:
    """Silence MLflow's console prints around a registration ("Successfully registered model
    'shopml-churn'.", "Created version '3' of model ..."): ``mlflow.register_model`` prints them
    with ``eprint`` to ``MLFLOW_LOGGING_STREAM``, which has no level and is switched off only by
    :func:`mlflow.utils.logging_utils.disable_logging` (what MLflow's own ``silent=True``
    autologging uses). That stream also carries the ``mlflow`` loggers' records, so while it is
    off they propagate to the application's handlers instead: a registry warning still shows.
    """
    from mlflow.utils import logging_utils

    stream = logging_utils.MLFLOW_LOGGING_STREAM
    mlflow_logger = logging.getLogger("mlflow")
    was_enabled, propagated = stream.enabled, mlflow_logger.propagate
    stream.enabled, mlflow_logger.propagate = False, True
    try:
        yield
    finally:
        stream.enabled, mlflow_logger.propagate = was_enabled, propagated


def _flatten(params: dict[str, Any], prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, f"{name}."))
        else:
            out[name] = str(value)[:500]
    return out


def scratch_dir() -> tempfile.TemporaryDirectory[str]:
    """A temporary folder for model files before they are logged."""
    return tempfile.TemporaryDirectory(prefix="shopml-")
