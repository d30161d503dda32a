"""The model store: classifier versions and metrics in the catalog, their artifacts in the blob store.

Exactly one version is `production` at a time (promotion retires the previous one in the same
transaction). On a fresh install the baseline shipped with the `training` package is registered as
production; the store is told where that baseline is, so the core never imports the training code.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass
from pathlib import Path

from imago_pipeline.core.catalog import Catalog
from imago_pipeline.core.catalog.models import ModelVersion
from imago_pipeline.core.stores.blobs import BlobStore


@dataclass(frozen=True)
class RegisteredModel:
    version: str
    status: str
    metrics: dict
    data_fingerprint: str
    artifact_key: str


@dataclass(frozen=True)
class Baseline:
    """The shipped model and its card, registered as production on a fresh install."""

    model: Path
    card: Path

    def tag(self) -> str:
        return f"model-{hashlib.sha256(self.model.read_bytes()).hexdigest()[:8]}" if self.model.exists() \
            else "model-none"


def production_tag(catalog: Catalog | None, baseline: Baseline) -> str:
    """`model-<sha8 of the artifact>` of the production version, without loading or writing anything: part of
    the classification stage's code version. Before any registration it is the shipped baseline's."""
    try:
        row = catalog.model_versions.production() if catalog is not None else None
    except Exception:  # catalog not reachable at load time: the baseline is what a fresh install uses
        row = None
    return f"model-{row.version.rsplit('-', 1)[-1]}" if row is not None else baseline.tag()


def _as_registered(row: ModelVersion) -> RegisteredModel:
    return RegisteredModel(row.version, row.status, row.metrics or {}, row.data_fingerprint, row.artifact_key)


_bootstrap_lock = threading.Lock()


class ModelStore:
    def __init__(self, catalog: Catalog, store: BlobStore, cache_dir: Path, baseline: Baseline):
        self.catalog, self.store, self.cache_dir, self.baseline = catalog, store, cache_dir, baseline

    def register(self, model_path: Path, card: dict, *, status: str = "candidate") -> RegisteredModel:
        data = model_path.read_bytes()
        version = f"v{self.catalog.model_versions.count() + 1}-{hashlib.sha256(data).hexdigest()[:8]}"
        key = f"models/{version}.keras"
        self.store.put(key, data)
        self.catalog.model_versions.add(ModelVersion(
            version=version, status="candidate", data_fingerprint=card["training_data"]["fingerprint"],
            metrics=card.get("metrics", {}), card=card, artifact_key=key))
        if status == "production":
            self.promote(version)
        return self.get(version)

    def get(self, version: str) -> RegisteredModel:
        row = self.catalog.model_versions.get(version)
        if row is None:
            raise KeyError(version)
        return _as_registered(row)

    def versions(self) -> list[RegisteredModel]:
        return [_as_registered(row) for row in self.catalog.model_versions.all()]

    def promote(self, version: str) -> None:
        self.catalog.model_versions.promote(version)

    def production(self) -> RegisteredModel:
        """The production version, registering the shipped baseline first on a fresh install."""
        row = self.catalog.model_versions.production()
        if row is not None:
            return _as_registered(row)
        with _bootstrap_lock:
            row = self.catalog.model_versions.production()
            if row is not None:
                return _as_registered(row)
            return self.register(self.baseline.model, json.loads(self.baseline.card.read_text()), status="production")

    def production_tag(self) -> str:
        return production_tag(self.catalog, self.baseline)

    def local_path(self, model: RegisteredModel) -> Path:
        """The artifact as a local file (Keras loads from a path), cached by version."""
        path = self.cache_dir / f"{model.version}.keras"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(self.store.get(model.artifact_key))
            tmp.replace(path)
        return path
