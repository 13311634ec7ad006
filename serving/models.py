"""Model folders <-> the BentoML model store.

Every servable model is one artifact folder (``meta.json`` + native files) written by
``shopml.artifacts``. :func:`store_model` copies such a folder into the BentoML model store as
``shopml-<kind>``; :func:`resolve_models` finds ``shopml-<kind>:latest`` for each kind at service
start-up. Inside a built Bento the packed models live in the Bento's own model store, which BentoML
makes the active store, so the same lookup works there. ``SHOPML_MODEL_DIR`` (a folder with one
sub-folder per kind) overrides the store, for tests and local runs.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: Model kinds the service knows, in the order ``/v1/models`` lists them.
KINDS = ("recommender", "churn", "repurchase", "value", "demand")
PREFIX = "shopml-"
META = "meta.json"
MODEL_DIR_ENV = "SHOPML_MODEL_DIR"


def model_name(kind: str) -> str:
    """The BentoML model name of a kind (``shopml-churn``)."""
    if kind not in KINDS:
        raise ValueError(f"unknown model kind {kind!r}; expected one of {KINDS}")
    return PREFIX + kind


def store_model(
    kind: str,
    folder: Path,
    labels: dict[str, str] | None = None,
    metadata: dict[str, Any] | None = None,
) -> str:
    """Copy an artifact ``folder`` into the BentoML model store as ``shopml-<kind>``; the tag.

    ``labels`` (e.g. ``{"mlflow_version": "3", "alias": "champion"}``) and ``metadata`` (e.g.
    headline metrics, ``as_of``) are stored with the model and shown by ``/v1/models``.
    """
    import bentoml

    folder = Path(folder)
    if not (folder / META).is_file():
        raise FileNotFoundError(f"{folder}: no {META}; not a shopml model artifact folder")
    meta = json.loads((folder / META).read_text())
    md: dict[str, Any] = {"artifact_kind": meta.get("kind"), "as_of": meta.get("as_of")}
    md.update(metadata or {})
    with bentoml.models.create(
        model_name(kind),
        labels={str(k): str(v) for k, v in (labels or {}).items()},
        metadata=_jsonable(md),
    ) as model:
        shutil.copytree(folder, model.path, dirs_exist_ok=True)
    tag = str(model.tag)
    log.info("stored %s from %s as %s", kind, folder, tag)
    return tag


def _jsonable(value: Any) -> Any:
    """Plain JSON types only (BentoML validates metadata)."""
    return json.loads(json.dumps(value, default=str))


@dataclass
class ModelSource:
    """Where one kind's artifact folder was found (or why not)."""

    kind: str
    path: Path | None
    tag: str | None = None
    source: str | None = None
    created_at: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    message: str | None = None
    #: Older versions of the same model, newest first: served when this one fails to load.
    fallbacks: list[ModelSource] = field(default_factory=list)


def find_models(kinds: tuple[str, ...] = KINDS) -> dict[str, ModelSource]:
    """Look every kind up (``SHOPML_MODEL_DIR`` first, else the BentoML store); never raises."""
    override = os.environ.get(MODEL_DIR_ENV)
    out: dict[str, ModelSource] = {}
    for kind in kinds:
        try:
            out[kind] = _from_dir(kind, Path(override)) if override else _from_store(kind)
        except Exception as exc:  # a broken store must not stop start-up
            log.exception("looking up model %s failed", kind)
            out[kind] = ModelSource(kind, None, message=f"lookup failed: {exc}")
    return out


def resolve_models() -> dict[str, Path]:
    """Folder of each kind that was found; missing kinds are absent (and logged)."""
    found = find_models()
    for src in found.values():
        if src.path is None:
            log.warning("model %s not available: %s", src.kind, src.message)
    return {k: s.path for k, s in found.items() if s.path is not None}


def _from_dir(kind: str, root: Path) -> ModelSource:
    folder = root / kind
    if not (folder / META).is_file():
        return ModelSource(kind, None, message=f"no {folder}/{META} ({MODEL_DIR_ENV}={root})")
    meta = json.loads((folder / META).read_text())
    return ModelSource(
        kind,
        folder,
        tag=f"{model_name(kind)}:dir",
        source=str(folder),
        metadata={"as_of": meta.get("as_of"), "artifact_kind": meta.get("kind")},
    )


#: How many older store versions a kind may fall back to when its latest fails to load.
MAX_FALLBACKS = 3


def _from_store(kind: str) -> ModelSource:
    import bentoml
    from bentoml.exceptions import NotFound

    ref = f"{model_name(kind)}:latest"
    try:
        model = bentoml.models.get(ref)
    except NotFound:
        return ModelSource(kind, None, message=f"{ref} is not in the BentoML model store")
    source = _source_of(kind, model)
    try:
        older = [m for m in bentoml.models.list(model_name(kind)) if m.tag != model.tag]
        older.sort(key=lambda m: m.info.creation_time, reverse=True)
        source.fallbacks = [_source_of(kind, m) for m in older[:MAX_FALLBACKS]]
    except Exception:  # listing is best effort: the latest model is still served
        log.exception("listing older versions of %s failed", model_name(kind))
    return source


def _source_of(kind: str, model: Any) -> ModelSource:
    path = Path(model.path)
    if not (path / META).is_file():
        return ModelSource(kind, None, tag=str(model.tag), message=f"{model.tag} has no {META}")
    info = model.info
    return ModelSource(
        kind,
        path,
        tag=str(model.tag),
        source="bentoml",
        created_at=info.creation_time.isoformat() if info.creation_time else None,
        labels={str(k): str(v) for k, v in (info.labels or {}).items()},
        metadata=dict(info.metadata or {}),
    )
