"""The model registry: versions and metrics in the catalog, `.keras` artifacts in the blob store.

Exactly one version is `production` at a time (promotion retires the previous one in the same
transaction). On a fresh install the baseline shipped in `training/baseline/` is registered as production.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import func, select, update

from imago_pipeline.core.catalog import Catalog
from imago_pipeline.core.catalog.models import ModelVersion, utcnow
from imago_pipeline.core.stores.blobs import BlobStore

BASELINE_DIR = Path(__file__).parent / "baseline"
BASELINE_MODEL = BASELINE_DIR / "model.keras"
BASELINE_CARD = BASELINE_DIR / "model.card.json"


@dataclass(frozen=True)
class RegisteredModel:
    version: str
    status: str
    metrics: dict
    data_fingerprint: str
    artifact_key: str


def _as_registered(row: ModelVersion) -> RegisteredModel:
    return RegisteredModel(row.version, row.status, row.metrics or {}, row.data_fingerprint, row.artifact_key)


class ModelRegistry:
    def __init__(self, catalog: Catalog, store: BlobStore, cache_dir: Path):
        self.catalog, self.store, self.cache_dir = catalog, store, cache_dir

    def register(self, model_path: Path, card: dict, *, status: str = "candidate") -> RegisteredModel:
        data = model_path.read_bytes()
        with self.catalog.session() as session:
            number = (session.scalar(select(func.count()).select_from(ModelVersion)) or 0) + 1
            version = f"v{number}-{hashlib.sha256(data).hexdigest()[:8]}"
            key = f"models/{version}.keras"
            self.store.put(key, data)
            row = ModelVersion(version=version, status="candidate", data_fingerprint=card["training_data"]["fingerprint"],
                               metrics=card.get("metrics", {}), card=card, artifact_key=key)
            session.add(row)
            session.commit()
        if status == "production":
            self.promote(version)
        return self.get(version)

    def get(self, version: str) -> RegisteredModel:
        with self.catalog.session() as session:
            row = session.scalar(select(ModelVersion).where(ModelVersion.version == version))
            if row is None:
                raise KeyError(version)
            return _as_registered(row)

    def versions(self) -> list[RegisteredModel]:
        with self.catalog.session() as session:
            return [_as_registered(r) for r in session.scalars(select(ModelVersion).order_by(ModelVersion.id))]

    def promote(self, version: str) -> None:
        with self.catalog.session() as session:
            session.execute(update(ModelVersion).where(ModelVersion.status == "production")
                            .values(status="retired"))
            session.execute(update(ModelVersion).where(ModelVersion.version == version)
                            .values(status="production", promoted_at=utcnow()))
            session.commit()

    def production(self) -> RegisteredModel:
        """The production version, registering the shipped baseline first on a fresh install."""
        with self.catalog.session() as session:
            row = session.scalar(select(ModelVersion).where(ModelVersion.status == "production"))
            if row is not None:
                return _as_registered(row)
        with _bootstrap_lock:
            with self.catalog.session() as session:
                row = session.scalar(select(ModelVersion).where(ModelVersion.status == "production"))
                if row is not None:
                    return _as_registered(row)
            return self.register(BASELINE_MODEL, json.loads(BASELINE_CARD.read_text()), status="production")

    def local_path(self, model: RegisteredModel) -> Path:
        """The artifact as a local file (Keras loads from a path), cached by version."""
        path = self.cache_dir / f"{model.version}.keras"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(self.store.get(model.artifact_key))
            tmp.replace(path)
        return path


_bootstrap_lock = threading.Lock()
_classifiers: dict[str, object] = {}


def load_classifier(registry: ModelRegistry, model: RegisteredModel):
    """One load per process and version (a Dagster run loads the model once for its whole batch)."""
    from training.predict import Classifier

    if model.version not in _classifiers:
        _classifiers.clear()
        _classifiers[model.version] = Classifier(registry.local_path(model), version=model.version)
    return _classifiers[model.version]


def production_model_tag(catalog: Catalog | None) -> str:
    """`model-<sha8 of the artifact>` of the production version, without loading anything or writing: part of
    the classification asset's code version. Before any registration it is the shipped baseline's."""
    try:
        if catalog is not None:
            with catalog.session() as session:
                version = session.scalar(select(ModelVersion.version).where(ModelVersion.status == "production"))
            if version:
                return f"model-{version.rsplit('-', 1)[-1]}"
    except Exception:  # catalog not reachable at load time: the baseline is what a fresh install uses
        pass
    return f"model-{hashlib.sha256(BASELINE_MODEL.read_bytes()).hexdigest()[:8]}" if BASELINE_MODEL.exists() \
        else "model-none"
