"""Thumbnail stage: an upright JPEG of at most `thumbnail_size` px in the blob store; each one re-read."""

from __future__ import annotations

import io
from dataclasses import dataclass

from PIL import Image as PILImage

from imago_pipeline.core.catalog import CheckOutcome
from imago_pipeline.core.catalog.models import Thumbnail, utcnow
from imago_pipeline.core.enrichment.batch import ImageBatch, Mapper, StageInput, StageReport, run_one, worker_crashed
from imago_pipeline.core.enrichment.thumbnail import make_thumbnail
from imago_pipeline.core.stores import lake_tables
from imago_pipeline.core.stores.blobs import BlobStore, thumbnail_key

CHECK = "thumbnail_decodes"


@dataclass(frozen=True)
class ThumbnailResult:
    blob_key: str
    width: int
    height: int
    byte_size: int


def make(item: StageInput) -> ThumbnailResult:
    thumb = make_thumbnail(item.store.get(item.blob_key), size=item.thumbnail_size, max_pixels=item.max_pixels)
    key = thumbnail_key(item.tenant_id, item.image_id)
    item.store.put(key, thumb.jpeg)
    return ThumbnailResult(blob_key=key, width=thumb.width, height=thumb.height, byte_size=len(thumb.jpeg))


def work(item: StageInput):
    return run_one(item, make)


def decodes(store: BlobStore, row: dict) -> CheckOutcome:
    """The stored thumbnail decodes, at the size recorded."""
    try:
        with PILImage.open(io.BytesIO(store.get(row["blob_key"]))) as image:
            image.load()
            size_ok = image.size == (row["width"], row["height"])
        return CheckOutcome(row["image_id"], row["tenant_id"], size_ok, None if size_ok else f"decoded at {image.size}")
    except Exception as exc:
        return CheckOutcome(row["image_id"], row["tenant_id"], False, f"{type(exc).__name__}")


def run(batch: ImageBatch, inputs: list[StageInput], pool: Mapper, store: BlobStore) -> StageReport:
    results = pool(work, inputs, on_crash=worker_crashed)
    now = utcnow()
    rows = [{"image_id": r.image_id, "tenant_id": r.tenant_id, "blob_key": r.value.blob_key, "width": r.value.width,
             "height": r.value.height, "byte_size": r.value.byte_size, "created_at": now} for r in results if r.ok]
    batch.save(results, Thumbnail, rows)
    files = batch.to_lake(lake_tables.THUMBNAIL, rows)
    check = batch.check(CHECK, [decodes(store, row) for row in rows],
                        description="Re-read from the blob store and decoded")
    return batch.report(results, lake_files=files, checks=[check])
