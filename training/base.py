"""What every shopml model kind has in common (the platform's model contract).

A model follows scikit-learn habits: ``__init__`` stores arguments only, ``fit`` returns self,
fitted state ends in ``_``, prediction methods call :func:`check_fitted`. ``save(folder)`` writes
a self-contained artifact in native formats (LightGBM text, ``.npz`` without pickle, JSON,
Parquet) plus ``meta.json``; ``load(folder)`` reads it back without any training code running.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Protocol, Self

import pandas as pd

from shopml.artifacts.meta import META_FILE, library_versions, read_meta, write_meta

__all__ = [
    "META_FILE",
    "NotFittedError",
    "ShopModel",
    "check_fitted",
    "library_versions",
    "read_meta",
    "write_meta",
]


class NotFittedError(RuntimeError):
    """A prediction method was called before ``fit``."""


def check_fitted(model: object, attribute: str) -> None:
    """Raise :class:`NotFittedError` unless ``model`` has the fitted ``attribute``."""
    if getattr(model, attribute, None) is None:
        raise NotFittedError(f"{type(model).__name__} is not fitted yet: call fit() first")


class ShopModel(Protocol):
    """The contract every model kind meets (checked by ``tests/test_model_contract.py``)."""

    kind: ClassVar[str]

    def fit(self, orders: pd.DataFrame, as_of: pd.Timestamp, **tables: Any) -> Self: ...

    def save(self, folder: Path) -> None: ...

    @classmethod
    def load(cls, folder: Path) -> Self: ...
