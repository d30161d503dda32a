"""Embedding stage: what the pretrained backbone sees in each image (a 1280-d vector and the top ImageNet
classes), stored for the classification head, similar-image search, duplicates and the offline tags.

Images are decoded and squashed to 224×224 on the worker pool (one process per core); the backbone then runs
once over the whole batch in this process (onnxruntime, using every core).
"""

from __future__ import annotations

import time

import numpy as np

from imago_pipeline.core.catalog.models import ImageEmbedding, utcnow
from imago_pipeline.core.embedding import encoder as embedding_encoder
from imago_pipeline.core.embedding.imagenet import classes
from imago_pipeline.core.enrichment.batch import (
    ImageBatch,
    Mapper,
    StageInput,
    StageReport,
    StageResult,
    run_one,
    worker_crashed,
)
from imago_pipeline.core.stores import lake_tables


def decode(item: StageInput) -> np.ndarray:
    return embedding_encoder.pixels(item.store.get(item.blob_key), max_pixels=item.max_pixels)


def work(item: StageInput) -> StageResult:
    return run_one(item, decode)


def run(batch: ImageBatch, inputs: list[StageInput], pool: Mapper, encoder: embedding_encoder.Encoder) -> StageReport:
    decoded = pool(work, inputs, on_crash=worker_crashed)
    ok = [r for r in decoded if r.ok]
    started = time.perf_counter()
    embeddings = encoder.encode(np.stack([r.value for r in ok])) if ok else []
    per_image_ms = (time.perf_counter() - started) * 1000 / max(1, len(ok))
    results = [StageResult(r.image_id, r.tenant_id, e, None, r.duration_ms + per_image_ms)
               for r, e in zip(ok, embeddings)] + [r for r in decoded if not r.ok]
    now = utcnow()
    rows = [{"image_id": r.image_id, "tenant_id": r.tenant_id, "vector": embedding_encoder.to_bytes(r.value.vector),
             "fingerprint": r.value.fingerprint.tobytes(), "imagenet": [list(pair) for pair in r.value.imagenet],
             "model": encoder.version, "created_at": now}
            for r in results if r.ok]
    batch.save(results, ImageEmbedding, rows)
    names = classes()
    lake_rows = [{"image_id": r.image_id, "tenant_id": r.tenant_id, "vector": r.value.vector.astype(np.float32),
                  "imagenet_top1": names[r.value.imagenet[0][0]].name,
                  "imagenet_top1_probability": r.value.imagenet[0][1], "model": encoder.version, "created_at": now}
                 for r in results if r.ok]
    files = batch.to_lake(lake_tables.EMBEDDING, lake_rows)
    return batch.report(results, lake_files=files, model=encoder.version,
                        backbone_ms_per_image=round(per_image_ms, 1))
