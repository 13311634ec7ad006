"""``meta.json`` of a saved model folder: model kind, library versions and model-specific fields.

Lives in :mod:`shopml.artifacts` so runtimes can read and write it without importing training.
"""

from __future__ import annotations

import contextlib
import json
import platform
from pathlib import Path
from typing import Any

META_FILE = "meta.json"


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
    (Path(folder) / META_FILE).write_text(json.dumps(payload, indent=2, default=str) + "\n")


def read_meta(folder: Path) -> dict[str, Any]:
    """Read ``meta.json`` of a saved model folder."""
    return dict(json.loads((Path(folder) / META_FILE).read_text()))
