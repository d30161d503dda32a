"""The model store: classification-head versions and metrics in the catalog, their artifacts in the blob store.

Exactly one version is `production` at a time (promotion retires the previous one in the same
transaction). On a fresh install the baseline shipped with the `training` package is registered as
production; the store is told where that baseline is, so the core never imports the training code. A
production model of a format this code cannot serve (the whole-image CNN of earlier releases) is superseded
by the baseline the same way, on first use.

Each version has two artifacts: the portable head (`.npz`, what the pipeline and the API serve, no
TensorFlow) and the Keras model it was exported from (`.keras`, for people and tools that want Keras).
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.exc import IntegrityError

from imago_pipeline.core.catalog import Catalog
from imago_pipeline.core.catalog.models import ModelVersion
from imago_pipeline.core.embedding.head import HEAD_FORMAT, Head
from imago_pipeline.core.stores.blobs import BlobStore


@dataclass(frozen=True)
class RegisteredModel:
    version: str
    status: str
    metrics: dict
    data_fingerprint: str
    artifact_key: str
    format: str | None = None

    @property
    def servable(self) -> bool:
        return self.format == HEAD_FORMAT


@dataclass(frozen=True)
class Baseline:
    """The shipped head (portable `.npz`, its `.keras` and its card), registered as production on a fresh
    install."""

    model: Path
    card: Path
    keras: Path | None = None

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
    if row is None or (row.card or {}).get("format") != HEAD_FORMAT:  # superseded by the baseline on first use
        return baseline.tag()
    return f"model-{row.version.rsplit('-', 1)[-1]}"


def _as_registered(row: ModelVersion) -> RegisteredModel:
    return RegisteredModel(row.version, row.status, row.metrics or {}, row.data_fingerprint, row.artifact_key,
                           (row.card or {}).get("format"))


_bootstrap_lock = threading.Lock()
_heads_lock = threading.Lock()
_heads: dict[str, Head] = {}


class ModelStore:
    def __init__(self, catalog: Catalog, store: BlobStore, cache_dir: Path, baseline: Baseline):
        self.catalog, self.store, self.cache_dir, self.baseline = catalog, store, cache_dir, baseline

    def register(self, model_path: Path, card: dict, *, keras_path: Path | None = None,
                 status: str = "candidate") -> RegisteredModel:
        data = model_path.read_bytes()
        Head.from_bytes(data)  # refuse to register what could not be served
        version = f"v{self.catalog.model_versions.count() + 1}-{hashlib.sha256(data).hexdigest()[:8]}"
        key = f"models/{version}.npz"
        self.store.put(key, data)
        if keras_path is not None:
            self.store.put(f"models/{version}.keras", keras_path.read_bytes())
        try:
            self.catalog.model_versions.add(ModelVersion(
                version=version, status="candidate", data_fingerprint=card["training_data"]["fingerprint"],
                metrics=card.get("metrics", {}), card=card, artifact_key=key))
        except IntegrityError:
            # The same bytes registered by another process between our count and our insert (two workers'
            # first classification on a fresh catalog both register the baseline): the version is theirs
            # and ours alike, same name, same artifact.
            if self.catalog.model_versions.get(version) is None:
                raise
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

    def promote(self, version: str, *, replacing: str | None = None) -> None:
        """See `ModelVersionStore.promote`: an unknown version is refused, and with `replacing` only while
        that version is still production."""
        self.catalog.model_versions.promote(version, replacing=replacing)

    def production(self) -> RegisteredModel:
        """The production version, registering the shipped baseline first on a fresh install (or when the
        production model is of a format this code cannot serve)."""
        row = self.catalog.model_versions.production()
        if row is not None and _as_registered(row).servable:
            return _as_registered(row)
        with _bootstrap_lock:
            row = self.catalog.model_versions.production()
            if row is not None and _as_registered(row).servable:
                return _as_registered(row)
            return self.register(self.baseline.model, json.loads(self.baseline.card.read_text()),
                                 keras_path=self.baseline.keras, status="production")

    def production_tag(self) -> str:
        return production_tag(self.catalog, self.baseline)

    def head(self, model: RegisteredModel) -> Head:
        """The servable head of a version, read once per process and version."""
        with _heads_lock:
            if model.version not in _heads:
                _heads.clear()
                _heads[model.version] = Head.from_bytes(self.store.get(model.artifact_key))
            return _heads[model.version]
