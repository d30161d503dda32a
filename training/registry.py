"""The model store opened with the baseline this package ships, and the classifier loaded from it.

The store itself is core code (`imago_pipeline.core.model_store`); what is TensorFlow lives here: loading a
`.keras` artifact, once per process and version.
"""

from __future__ import annotations

from pathlib import Path

from imago_pipeline.core.catalog import Catalog
from imago_pipeline.core.model_store import Baseline, ModelStore, RegisteredModel
from imago_pipeline.core.stores.blobs import BlobStore

BASELINE_DIR = Path(__file__).parent / "baseline"
BASELINE = Baseline(model=BASELINE_DIR / "model.keras", card=BASELINE_DIR / "model.card.json")


def open_model_store(catalog: Catalog, store: BlobStore, cache_dir: Path) -> ModelStore:
    return ModelStore(catalog, store, cache_dir, BASELINE)


_classifiers: dict[str, object] = {}


def load_classifier(models: ModelStore, model: RegisteredModel):
    """One load per process and version (a Dagster run loads the model once for its whole batch)."""
    from training.predict import Classifier

    if model.version not in _classifiers:
        _classifiers.clear()
        _classifiers[model.version] = Classifier(models.local_path(model), version=model.version)
    return _classifiers[model.version]
