"""Classification stage: a label and its probability per image from the production model, predicted in one
batch. The model is given (`Classifier`): loading it is the caller's business (TensorFlow stays out of the
core)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from typing import Any, Protocol

from imago_pipeline.core.catalog.models import Classification, utcnow
from imago_pipeline.core.enrichment.batch import ImageBatch, StageReport, StageResult
from imago_pipeline.core.stores import lake_tables
from imago_pipeline.core.stores.blobs import BlobStore


class Prediction(Protocol):
    label: str
    probability: float


class Classifier(Protocol):
    def pixels(self, data: bytes) -> Any: ...

    def predict_pixels(self, pixels: Any) -> Sequence[Prediction]: ...


def run(batch: ImageBatch, store: BlobStore, classifier: Classifier, model_version: str) -> StageReport:
    import numpy as np

    results: list[StageResult] = []
    decoded = []
    for image in batch.images.values():
        started = time.perf_counter()
        try:
            decoded.append((image, classifier.pixels(store.get(image.blob_key))))
        except Exception as exc:  # an undecodable image fails alone
            results.append(StageResult(image.id, image.tenant_id, None, f"{type(exc).__name__}: {exc}",
                                       (time.perf_counter() - started) * 1000))
    started = time.perf_counter()
    predictions = classifier.predict_pixels(np.stack([p for _, p in decoded])) if decoded else []
    per_image_ms = (time.perf_counter() - started) * 1000 / max(1, len(decoded))
    results += [StageResult(image.id, image.tenant_id, prediction, None, per_image_ms)
                for (image, _), prediction in zip(decoded, predictions)]
    now = utcnow()
    rows = [{"image_id": r.image_id, "tenant_id": r.tenant_id, "label": r.value.label,
             "probability": r.value.probability, "model_version": model_version, "created_at": now}
            for r in results if r.ok]
    batch.save(results, Classification, rows)
    files = batch.to_lake(lake_tables.CLASSIFICATION, rows)
    labels = Counter(row["label"] for row in rows)
    return batch.report(results, lake_files=files, model_version=model_version, cats=labels["cat"],
                        dogs=labels["dog"])
