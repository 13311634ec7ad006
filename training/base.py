"""What every shopml model kind has in common (the platform's model contract).

A model follows scikit-learn habits: ``__init__`` stores arguments only, ``fit`` returns self,
fitted state ends in ``_``, prediction methods call :func:`check_fitted`. ``save(folder)`` writes
a self-contained artifact in native formats (LightGBM text, ``.npz`` without pickle, JSON,
Parquet) plus ``meta.json``; ``load(folder)`` reads it back without any training code running.
"""

from __future__ import annotations

import contextlib
import json
import platform
from pathlib import Path
from typing import Any, ClassVar, Protocol, Self

import pandas as pd

META_FILE = "meta.json"


class NotFittedError(RuntimeError):
    """A prediction method was called before ``fit``."""


def check_fitted(model: object, attribute: str) -> None:
    """Raise :class:`NotFittedError` unless ``model`` has the fitted ``attribute``."""
    if getattr(model, attribute, None) is None:
        raise NotFittedError(f"{type(model).__name__} is not fitted yet: call fit() first")


def library_versions() -> dict[str, str]:
    """Versions of the libraries an artifact depends on, recorded in its ``meta.json``."""
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for name in ("numpy", "pandas", "pyarrow", "lightgbm", "implicit", "scikit-learn", "shopml"):
        with contextlib.suppress(md.PackageNotFoundError):
            out[name] = md.version(name)
    return out


def write_meta(folder: Path, kind: str, **meta: Any) -> None:
    """Write ``meta.json``: model kind, library versions and whatever the model adds."""
    payload = {"kind": kind, "versions": library_versions(), **meta}
    (folder / META_FILE).write_text(json.dumps(payload, indent=2, default=str) + "\n")


def read_meta(folder: Path) -> dict[str, Any]:
    """Read ``meta.json`` of a saved model folder."""
    return dict(json.loads((Path(folder) / META_FILE).read_text()))


class ShopModel(Protocol):
    """The contract every model kind meets (checked by ``tests/test_model_contract.py``)."""

    kind: ClassVar[str]

    def fit(self, orders: pd.DataFrame, as_of: pd.Timestamp, **tables: Any) -> Self: ...

    def save(self, folder: Path) -> None: ...

    @classmethod
    def load(cls, folder: Path) -> Self: ...
