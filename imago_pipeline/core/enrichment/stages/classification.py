"""Classification stage: `cat`, `dog` or `other` per image, from its stored embedding and the production
head. No pixels are read and no backbone runs here, so re-classifying after a promotion costs a catalog
read and a few matrix products per image."""

from __future__ import annotations

import time
from collections import Counter

import numpy as np

from imago_pipeline.core.catalog.models import Classification, utcnow
from imago_pipeline.core.embedding import encoder as embedding_encoder
from imago_pipeline.core.embedding.head import Head
from imago_pipeline.core.enrichment.batch import ImageBatch, StageReport, StageResult
from imago_pipeline.core.stores import lake_tables


def run(batch: ImageBatch, head: Head, model_version: str) -> StageReport:
    stored = batch.catalog.results.embeddings(list(batch.images))
    results: list[StageResult] = []
    ready = []
    for image in batch.images.values():
        row = stored.get(image.id)
        if row is None:
            results.append(StageResult(image.id, image.tenant_id, None, "no embedding (the embedding stage failed)"))
        elif row.model != head.embedding_version:
            results.append(StageResult(image.id, image.tenant_id, None,
                                       f"embedding {row.model} is not the one the head was trained on "
                                       f"({head.embedding_version}); the embedding stage must run again"))
        else:
            ready.append((image, embedding_encoder.from_bytes(row.vector)))
    started = time.perf_counter()
    predictions = head.predict(np.stack([v for _, v in ready])) if ready else []
    per_image_ms = (time.perf_counter() - started) * 1000 / max(1, len(ready))
    results += [StageResult(image.id, image.tenant_id, prediction, None, per_image_ms)
                for (image, _), prediction in zip(ready, predictions)]
    now = utcnow()
    rows = [{"image_id": r.image_id, "tenant_id": r.tenant_id, "label": r.value.label,
             "probability": r.value.probability, "probabilities": r.value.probabilities,
             "model_version": model_version, "created_at": now}
            for r in results if r.ok]
    batch.save(results, Classification, rows)
    files = batch.to_lake(lake_tables.CLASSIFICATION, rows)
    labels = Counter(row["label"] for row in rows)
    return batch.report(results, lake_files=files, model_version=model_version, cats=labels["cat"],
                        dogs=labels["dog"], other=labels["other"])
