"""Vision stage: a description and tags per image from the configured provider, given everything the other
stages found (EXIF, OCR, what the backbone sees, the classification) and the upright thumbnail; the output
re-validated as stored."""

from __future__ import annotations

import time

from imago_pipeline.core.catalog import CheckOutcome
from imago_pipeline.core.catalog.models import Vision, utcnow
from imago_pipeline.core.enrichment.batch import ImageBatch, StageReport, StageResult
from imago_pipeline.core.enrichment.exif import EXIF_FIELDS
from imago_pipeline.core.stores import lake_tables
from imago_pipeline.core.stores.blobs import BlobStore
from imago_pipeline.core.vision.base import PROMPT_VERSION, VisionContext, VisionError, VisionOutput, VisionProvider

CHECK = "output_matches_schema"


def describe(batch: ImageBatch, image, store: BlobStore, provider: VisionProvider, tenant) -> VisionOutput:
    thumb = tenant.get_thumbnail(image.id)
    if thumb is None:
        raise VisionError("no thumbnail to look at (the thumbnail stage failed)")
    exif_row, ocr_row = tenant.get_exif(image.id), tenant.get_ocr(image.id)
    label = tenant.get_classification(image.id)
    embedding = tenant.get_embedding(image.id)
    return provider.describe(VisionContext(
        image_jpeg=store.get(thumb.blob_key), width=image.width, height=image.height,
        exif={f: getattr(exif_row, f) for f in EXIF_FIELDS} if exif_row else {},
        ocr_text=ocr_row.text if ocr_row else "", ocr_language=ocr_row.language if ocr_row else None,
        has_text=bool(ocr_row and ocr_row.has_text),
        classification={"label": label.label, "probability": label.probability} if label else None,
        imagenet=tuple((int(i), float(p)) for i, p in embedding.imagenet) if embedding else ()))


def matches_schema(row: dict) -> CheckOutcome:
    try:
        VisionOutput.model_validate({k: row[k] for k in ("description", "tags", "confidence")})
        return CheckOutcome(row["image_id"], row["tenant_id"], True)
    except ValueError as exc:
        return CheckOutcome(row["image_id"], row["tenant_id"], False, str(exc)[:200])


def run(batch: ImageBatch, store: BlobStore, provider: VisionProvider) -> StageReport:
    scoped: dict[int, object] = {}
    results: list[StageResult] = []
    for image in batch.images.values():
        tenant = scoped.setdefault(image.tenant_id, batch.catalog.for_tenant(image.tenant_id))
        started = time.perf_counter()
        output, message = None, None
        try:
            output = describe(batch, image, store, provider, tenant)
        except Exception as exc:  # one image's provider failure is recorded on that image only
            message = str(exc) if isinstance(exc, VisionError) else f"{type(exc).__name__}: {exc}"
        results.append(StageResult(image.id, image.tenant_id, output, message, (time.perf_counter() - started) * 1000))
    now = utcnow()
    rows = [{"image_id": r.image_id, "tenant_id": r.tenant_id, "description": r.value.description,
             "tags": r.value.tags, "confidence": r.value.confidence, "model_used": provider.name, "created_at": now}
            for r in results if r.ok]
    batch.save(results, Vision, rows)
    batch.catalog.results.save_tags({row["image_id"]: (row["tenant_id"], row["tags"]) for row in rows})
    batch.catalog.results.refresh_search([row["image_id"] for row in rows])
    files = batch.to_lake(lake_tables.VISION, rows)
    check = batch.check(CHECK, [matches_schema(row) for row in rows], description="Re-validated as stored")
    return batch.report(results, lake_files=files, checks=[check], model=provider.name, prompt=PROMPT_VERSION)
