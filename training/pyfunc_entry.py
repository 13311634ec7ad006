"""MLflow "model from code" entry point: a pyfunc that serves any saved shopml model folder.

MLflow loads this file (not a pickle) and calls :class:`ShopmlPyfunc`; the model folder it reads
is the logged artifact ``model``. Batch users can then ``mlflow.pyfunc.load_model(uri).predict(df)``.
"""

from __future__ import annotations

from typing import Any

import mlflow
import pandas as pd


class ShopmlPyfunc(mlflow.pyfunc.PythonModel):  # type: ignore[name-defined,misc]
    """Loads a model folder with :func:`shopml.artifacts.registry.load_artifact` and predicts."""

    def load_context(self, context: Any) -> None:
        from shopml.artifacts.registry import load_artifact

        self.artifact = load_artifact(context.artifacts["model"])

    def predict(self, context: Any, model_input: pd.DataFrame, params: dict | None = None) -> Any:
        return self.artifact.predict_frame(model_input)


mlflow.models.set_model(ShopmlPyfunc())
