"""Load any saved model folder by its ``meta.json`` and give it a DataFrame-in/out predict.

Serving calls the runtimes' native methods directly; this tabular face is for MLflow's pyfunc
(batch users: ``mlflow.pyfunc.load_model("models:/shopml-churn@champion").predict(frame)``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from shopml.artifacts.meta import META_FILE


class ArtifactError(ValueError):
    """A model folder that is missing, incomplete or of an unknown kind."""


def artifact_kind(folder: str | Path) -> str:
    """``churn``, ``repurchase``, ``value``, ``recommender`` or ``demand`` from ``meta.json``."""
    path = Path(folder) / META_FILE
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ArtifactError(f"{folder}: no {META_FILE}: not a shopml model folder") from exc
    except json.JSONDecodeError as exc:
        raise ArtifactError(f"{path}: corrupt ({exc})") from exc
    return str(meta.get("task") or meta.get("kind"))


@dataclass
class CustomerTable:
    """Churn / repurchase / value scores: look customers up in the precomputed score table."""

    artifact: Any

    def predict_frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        scores = self.artifact.scores.set_index("customer_id")
        ids = frame["customer_id"].astype(str)
        return scores.reindex(ids).reset_index()


@dataclass
class RecommenderTable:
    """Top-k recommendations per row (``user_id``, optional ``k``)."""

    artifact: Any

    def predict_frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        rows = []
        for rec in frame.itertuples(index=False):
            k = int(getattr(rec, "k", 10))
            for rank, r in enumerate(self.artifact.recommend(str(rec.user_id), k), start=1):
                rows.append({"user_id": str(rec.user_id), "rank": rank, **r._asdict()})
        return pd.DataFrame(rows)


@dataclass
class DemandTable:
    """Weekly P10/P50/P90 per row (``item_id``, optional ``horizon``)."""

    artifact: Any

    def predict_frame(self, frame: pd.DataFrame) -> pd.DataFrame:
        horizon = int(frame["horizon"].max()) if "horizon" in frame else self.artifact.horizon
        return self.artifact.forecast(frame["item_id"].astype(str).tolist(), horizon)


def load_artifact(folder: str | Path) -> CustomerTable | RecommenderTable | DemandTable:
    """Load a saved model folder of any kind (raises :class:`ArtifactError` when unusable)."""
    kind = artifact_kind(folder)
    try:
        if kind in ("churn", "repurchase", "value"):
            from shopml.artifacts.customers import CustomerArtifact

            return CustomerTable(CustomerArtifact.load(folder))
        if kind == "recommender":
            from shopml.artifacts.recommender import RecommenderArtifact

            return RecommenderTable(RecommenderArtifact.load(folder))
        if kind == "demand":
            from shopml.artifacts.demand import DemandArtifact

            return DemandTable(DemandArtifact.load(Path(folder)))
    except (OSError, KeyError, ValueError) as exc:
        raise ArtifactError(f"{folder}: cannot load the {kind} model: {exc}") from exc
    raise ArtifactError(f"{folder}: unknown model kind {kind!r}")
