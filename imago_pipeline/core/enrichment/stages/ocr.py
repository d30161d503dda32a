"""OCR stage: the text in each image, one process per core: Tesseract for pages and line strips, RapidOCR for
text in photos (signs, labels; `ocr.py` routes), re-read by a remote vision provider when the confidence is
low and one is configured; every text read by a local engine carries its confidence."""

from __future__ import annotations

import io
from collections import Counter

from PIL import Image as PILImage
from PIL import ImageOps

from imago_pipeline.core.catalog import CheckOutcome
from imago_pipeline.core.catalog.models import Image, Ocr, utcnow
from imago_pipeline.core.enrichment.batch import ImageBatch, Mapper, StageInput, StageReport, run_one, worker_crashed
from imago_pipeline.core.enrichment.ocr import OcrResult, ocr_image, tesseract_version
from imago_pipeline.core.enrichment.scene_text import rapidocr_version
from imago_pipeline.core.stores import lake_tables
from imago_pipeline.core.stores.blobs import BlobStore
from imago_pipeline.core.vision.base import TextReading, VisionProvider

CHECK = "confidence_recorded"
CHECK_DESCRIPTION = ("Text read by a local engine (Tesseract, RapidOCR) always carries its mean word confidence "
                     "and each word's")
LOCAL_ENGINES = ("tesseract", "rapidocr")


def read(item: StageInput) -> OcrResult:
    return ocr_image(item.store.get(item.blob_key), languages=item.ocr_languages, max_pixels=item.max_pixels)


def work(item: StageInput):
    return run_one(item, read)


def read_remotely(provider: VisionProvider, store: BlobStore, image: Image) -> TextReading | None:
    """The OCR fallback: an upright JPEG of at most 1600 px, read by the vision provider (None on failure)."""
    try:
        with PILImage.open(io.BytesIO(store.get(image.blob_key))) as original:
            upright = ImageOps.exif_transpose(original).convert("RGB")
        upright.thumbnail((1600, 1600))
        buffer = io.BytesIO()
        upright.save(buffer, format="JPEG", quality=90)
        return provider.read_text(buffer.getvalue())
    except Exception:  # the fallback is best effort: the local engine's reading stays
        return None


def run(batch: ImageBatch, inputs: list[StageInput], pool: Mapper, *, store: BlobStore, provider: VisionProvider,
        fallback_below: float, languages: str) -> StageReport:
    results = pool(work, inputs, on_crash=worker_crashed)
    now = utcnow()
    rows, fallbacks = [], 0
    for r in results:
        if not r.ok:
            continue
        row = {"image_id": r.image_id, "tenant_id": r.tenant_id, "created_at": now,
               **r.value.to_dict(), "words": [w.__dict__ for w in r.value.words]}
        if r.value.confidence is not None and r.value.confidence < fallback_below and provider.remote:
            reading = read_remotely(provider, store, batch.images[r.image_id])
            if reading is not None:
                row.update(text=reading.text, language=reading.language, has_text=bool(reading.text.strip()),
                           engine=provider.name, words=[])
                fallbacks += 1
        rows.append(row)
    batch.save(results, Ocr, rows)
    batch.catalog.results.refresh_search([row["image_id"] for row in rows])
    files = batch.to_lake(lake_tables.OCR, [{**row, "word_count": len(row["words"]), "text_length": len(row["text"])}
                                            for row in rows])
    check = batch.check(CHECK, [
        CheckOutcome(row["image_id"], row["tenant_id"],
                     not (row["has_text"] and row["engine"] in LOCAL_ENGINES
                          and (row["confidence"] is None or not row["words"]
                               or any(w["confidence"] is None for w in row["words"]))))
        for row in rows], description=CHECK_DESCRIPTION)
    modes = Counter(row["mode"] for row in rows)
    engines = Counter(row["engine"] for row in rows)
    return batch.report(results, lake_files=files, checks=[check], with_text=sum(r["has_text"] for r in rows),
                        probe_only=modes["probe"], pages=modes["page"], lines=modes["line"],
                        scenes=modes["scene"], by_tesseract=engines["tesseract"], by_rapidocr=engines["rapidocr"],
                        remote_fallbacks=fallbacks,
                        engine=f"tesseract {tesseract_version()} + rapidocr {rapidocr_version()} ({languages})")
