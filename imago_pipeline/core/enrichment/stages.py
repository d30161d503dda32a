"""The per-image work of each enrichment stage, as plain functions.

Each takes a `StageInput` (where the bytes are) and returns a `StageResult` that holds either a value or
the error that image hit, so one bad image is recorded and never fails its batch. The same functions
serve the Dagster assets, the CLI and the benchmark's plain loop.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from imago_pipeline.core.enrichment.decode import InvalidImage
from imago_pipeline.core.enrichment.exif import ExifRecord, extract_exif
from imago_pipeline.core.enrichment.ocr import OcrResult, ocr_image
from imago_pipeline.core.enrichment.thumbnail import make_thumbnail
from imago_pipeline.core.stores.blobs import BlobStore, thumbnail_key


IMAGE_PARTITIONS = "images"  # the orchestrator's name for the set of image ids (Dagster's dynamic partitions)


@dataclass(frozen=True)
class StageInput:
    image_id: int
    tenant_id: int
    blob_key: str
    store: BlobStore
    max_pixels: int
    thumbnail_size: int = 256
    ocr_languages: str = "eng+fra"


@dataclass(frozen=True)
class StageResult:
    image_id: int
    tenant_id: int
    value: Any = None
    error: str | None = None
    duration_ms: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class ThumbnailResult:
    blob_key: str
    width: int
    height: int
    byte_size: int


def _run(item: StageInput, work) -> StageResult:
    started = time.perf_counter()
    try:
        value, error = work(item), None
    except InvalidImage as exc:
        value, error = None, str(exc)
    except Exception as exc:  # one image's surprise must not cost the batch
        value, error = None, f"{type(exc).__name__}: {exc}"
    return StageResult(item.image_id, item.tenant_id, value, error, (time.perf_counter() - started) * 1000)


def _exif(item: StageInput) -> ExifRecord:
    return extract_exif(item.store.get(item.blob_key), max_pixels=item.max_pixels)


def _thumbnail(item: StageInput) -> ThumbnailResult:
    thumb = make_thumbnail(item.store.get(item.blob_key), size=item.thumbnail_size, max_pixels=item.max_pixels)
    key = thumbnail_key(item.tenant_id, item.image_id)
    item.store.put(key, thumb.jpeg)
    return ThumbnailResult(blob_key=key, width=thumb.width, height=thumb.height, byte_size=len(thumb.jpeg))


def worker_crashed(item: StageInput) -> StageResult:
    return StageResult(item.image_id, item.tenant_id, None, "the decoder crashed on this file")


def _ocr(item: StageInput) -> OcrResult:
    return ocr_image(item.store.get(item.blob_key), languages=item.ocr_languages, max_pixels=item.max_pixels)


def ocr_stage(item: StageInput) -> StageResult:
    return _run(item, _ocr)


def exif_stage(item: StageInput) -> StageResult:
    return _run(item, _exif)


def thumbnail_stage(item: StageInput) -> StageResult:
    return _run(item, _thumbnail)
