"""The model store opened with the baseline head this package ships.

The store itself is core code (`imago_pipeline.core.model_store`), and so is serving a head (numpy); what
lives here is where the shipped baseline is.
"""

from __future__ import annotations

from pathlib import Path

from imago_pipeline.core.catalog import Catalog
from imago_pipeline.core.model_store import Baseline, ModelStore
from imago_pipeline.core.stores.blobs import BlobStore

BASELINE_DIR = Path(__file__).parent / "baseline"
BASELINE = Baseline(model=BASELINE_DIR / "head.npz", card=BASELINE_DIR / "head.card.json",
                    keras=BASELINE_DIR / "head.keras")


def open_model_store(catalog: Catalog, store: BlobStore, cache_dir: Path) -> ModelStore:
    return ModelStore(catalog, store, cache_dir, BASELINE)
