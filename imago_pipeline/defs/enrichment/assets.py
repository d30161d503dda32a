"""Per-image assets. One Dagster partition per image id; a run materializes a contiguous range of them.

Each asset loads its batch from the catalog, does the per-image work (on every core where it is CPU-bound),
writes catalog rows, stage status and check results in one place, appends the batch to the Parquet lake,
and returns metadata about the batch only (counts, timings, engine and model versions): file names, GPS and
text never go into Dagster's event log, which our retention purges do not reach.

Each asset's `code_version` names its logic version and, where a model or prompt is involved, that too:
changing one makes exactly the partitions materialized with the old version stale, and
`imago reprocess --stale` (or the `stale_reprocess_sensor`) re-runs only those.
"""

import io
import time
import warnings
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

import dagster as dg
import numpy as np
import pyarrow as pa
from PIL import Image as PILImage
from PIL import ImageOps

from imago_pipeline.core.catalog import Catalog, CheckOutcome, StageOutcome
from imago_pipeline.core.claims import CLAIM_TAG
from imago_pipeline.core.catalog.models import Classification, Exif, Image, Ocr, Thumbnail, Vision, utcnow
from imago_pipeline.core.config import ImagoSettings
from imago_pipeline.defs.resources import (
    BlobStoreResource,
    CatalogResource,
    LakeResource,
    SettingsResource,
    VisionResource,
    WorkerPoolResource,
)
from imago_pipeline.core.enrichment.exif import EXIF_FIELDS
from imago_pipeline.core.enrichment.ocr import OCR_LOGIC_VERSION, tesseract_version
from imago_pipeline.core.enrichment.stages import IMAGE_PARTITIONS, StageInput, StageResult, exif_stage, ocr_stage, thumbnail_stage, worker_crashed
from imago_pipeline.core.vision.base import PROMPT_VERSION, VisionContext, VisionError, VisionOutput

# BackfillPolicy on assets is marked beta; it is what makes one run cover a range of images.
warnings.filterwarnings("ignore", category=dg.BetaWarning)

image_partitions = dg.DynamicPartitionsDefinition(name=IMAGE_PARTITIONS)

uploads = dg.AssetSpec(
    "uploads",
    group_name="ingest",
    kinds={"sql", "folder"},
    description="Images registered through the API, the drop folder or `imago ingest`: bytes in the blob "
    "store, a `pending` row in the catalog. The upload sensor turns new rows into `images` partitions.",
)

STAGES = ("exif", "thumbnail", "ocr", "classification", "vision")
EXIF_VERSION = "exif-v1"
THUMBNAIL_VERSION = "thumbnail-v1"
VISION_VERSION = "vision-v1"
SUMMARY_VERSION = "image-summary-v1"
VISION_POOL = "vision_provider"


def ocr_code_version(settings: ImagoSettings) -> str:
    return f"{OCR_LOGIC_VERSION}|tesseract-{tesseract_version()}|{settings.ocr_languages}"


def vision_code_version(settings: ImagoSettings) -> str:
    model = "local-heuristics-v1" if settings.vision_provider == "local" else f"gemini:{settings.gemini_model}"
    return f"{VISION_VERSION}|{model}|{PROMPT_VERSION}"


CLASSIFY_VERSION = "classify-v1"


def classification_code_version(model_tag: str) -> str:
    return f"{CLASSIFY_VERSION}|{model_tag}"


def stage_code_versions(settings: ImagoSettings) -> dict[str, str]:
    from training.registry import production_model_tag

    try:
        catalog = Catalog.connect(settings.catalog_url)
    except Exception:  # the code location must load even when the catalog is down
        catalog = None
    return {"exif": EXIF_VERSION, "thumbnail": THUMBNAIL_VERSION, "ocr": ocr_code_version(settings),
            "classification": classification_code_version(production_model_tag(catalog)),
            "vision": vision_code_version(settings)}


_TS = pa.timestamp("us", tz="UTC")
EXIF_LAKE_SCHEMA = pa.schema(
    [("image_id", pa.int64())]
    + [(name, pa.float64()) if name in ("exposure_time", "f_number", "focal_length_mm", "gps_latitude",
                                        "gps_longitude", "gps_altitude")
       else (name, pa.int64()) if name in ("iso", "focal_length_35mm", "orientation", "width", "height")
       else (name, pa.string()) for name in EXIF_FIELDS]
    + [("extracted_at", _TS), ("run_id", pa.string())]
)
THUMBNAIL_LAKE_SCHEMA = pa.schema([
    ("image_id", pa.int64()), ("width", pa.int64()), ("height", pa.int64()), ("byte_size", pa.int64()),
    ("created_at", _TS), ("run_id", pa.string()),
])
OCR_LAKE_SCHEMA = pa.schema([  # no text: the lake holds measurements, the catalog holds content
    ("image_id", pa.int64()), ("has_text", pa.bool_()), ("confidence", pa.float64()), ("language", pa.string()),
    ("mode", pa.string()), ("rotation", pa.int64()), ("engine", pa.string()), ("word_count", pa.int64()),
    ("text_length", pa.int64()), ("created_at", _TS), ("run_id", pa.string()),
])
CLASSIFICATION_LAKE_SCHEMA = pa.schema([
    ("image_id", pa.int64()), ("label", pa.string()), ("probability", pa.float64()),
    ("model_version", pa.string()), ("created_at", _TS), ("run_id", pa.string()),
])
VISION_LAKE_SCHEMA = pa.schema([
    ("image_id", pa.int64()), ("tags", pa.list_(pa.string())), ("confidence", pa.float64()),
    ("model_used", pa.string()), ("created_at", _TS), ("run_id", pa.string()),
])
IMAGES_LAKE_SCHEMA = pa.schema([
    ("image_id", pa.int64()), ("sha256", pa.string()), ("media_type", pa.string()), ("byte_size", pa.int64()),
    ("width", pa.int64()), ("height", pa.int64()), ("status", pa.string()), ("error_stage", pa.string()),
    ("created_at", _TS), ("processed_at", _TS), ("run_id", pa.string()),
])

_PER_IMAGE: dict[str, Any] = dict(
    partitions_def=image_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name="enrichment",
    owners=["team:imago"],
    retry_policy=dg.RetryPolicy(max_retries=2, delay=2, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS),
)


class Batch:
    """The images of one run, and what the asset writes for them."""

    def __init__(self, context: dg.AssetExecutionContext, catalog: Catalog, stage: str, code_version: str):
        self.context, self.catalog, self.stage, self.code_version = context, catalog, stage, code_version
        self.ids = [int(key) for key in context.partition_keys]
        self.images = catalog.images_by_id(self.ids)  # an image erased since it was queued is simply absent
        self.started = time.perf_counter()

    def save(self, results: Sequence[StageResult], table: type, rows: list[dict[str, Any]]) -> None:
        outcomes = [StageOutcome(r.image_id, r.tenant_id, "done" if r.ok else "failed", r.error, r.duration_ms)
                    for r in results]
        self.catalog.save_stage(self.stage, outcomes, table, rows, run_id=self.context.run_id,
                                code_version=self.code_version)

    def to_lake(self, lake: LakeResource, schema: pa.Schema, rows: list[dict[str, Any]]) -> int:
        # An image erased while this run was working on it must not come back through the lake.
        alive = set(self.catalog.images_by_id([row["image_id"] for row in rows]))
        files = lake.get().write_batch(
            self.stage,
            [{**row, "tenant_id": self.images[row["image_id"]].tenant_id,
              "date": self.images[row["image_id"]].created_at.date(), "run_id": self.context.run_id}
             for row in rows if row["image_id"] in alive],
            batch_id=self.context.run_id.replace("-", ""), schema=schema)
        return len(files)

    def check(self, name: str, results: list[CheckOutcome], *, severity=dg.AssetCheckSeverity.ERROR,
              description: str) -> dg.AssetCheckResult:
        """Record a per-image check in the catalog (for the API) and summarise it for Dagster (counts only)."""
        self.catalog.save_checks(name, results)
        failed = [r for r in results if not r.passed]
        return dg.AssetCheckResult(
            check_name=name, passed=not failed, severity=severity,
            description=description,
            metadata={"checked": len(results), "failed": len(failed),
                      "failed_image_ids": dg.MetadataValue.text(",".join(str(r.image_id) for r in failed[:50]))})

    def metadata(self, results: Sequence[StageResult], **extra: Any) -> dict[str, Any]:
        elapsed = time.perf_counter() - self.started
        failed = sum(not r.ok for r in results)
        if failed:
            self.context.log.warning(f"{self.stage}: {failed} of {len(results)} images failed; see their status")
        work_ms = sorted(r.duration_ms for r in results) or [0.0]
        return {
            "images": len(results), "succeeded": len(results) - failed, "failed": failed,
            "missing_from_catalog": len(self.ids) - len(self.images),
            "duration_s": dg.MetadataValue.float(round(elapsed, 3)),
            "images_per_s": dg.MetadataValue.float(round(len(results) / elapsed, 2) if elapsed else 0.0),
            "p50_image_ms": dg.MetadataValue.float(round(work_ms[len(work_ms) // 2], 1)),
            "max_image_ms": dg.MetadataValue.float(round(work_ms[-1], 1)),
            "code_version": self.code_version, **extra,
        }

    def inputs(self, blobs: BlobStoreResource, settings: SettingsResource) -> list[StageInput]:
        store = blobs.get()
        return [StageInput(image_id=i.id, tenant_id=i.tenant_id, blob_key=i.blob_key, store=store,
                           max_pixels=settings.max_pixels, thumbnail_size=settings.thumbnail_size,
                           ocr_languages=settings.ocr_languages) for i in self.images.values()]


def _in_parallel(work: Callable[[StageInput], StageResult], items: list[StageInput],
                 pool: WorkerPoolResource) -> list[StageResult]:
    return pool.map(work, items, on_crash=worker_crashed)


def exif_plausibility(record: dict[str, Any], now: datetime) -> str | None:
    """Why an EXIF record looks wrong, or None. Dates before 1826 (the first photograph) or in the future
    and coordinates off the globe or exactly at 0,0 (a common default) are implausible."""
    taken = record.get("datetime_original")
    if taken:
        try:
            when = datetime.fromisoformat(taken)
        except ValueError:
            return f"unparseable date {taken!r}"
        when = when if when.tzinfo else when.replace(tzinfo=timezone.utc)
        if when.year < 1826 or when > now + timedelta(days=1):
            return f"date {taken} is outside 1826..today"
    lat, lon = record.get("gps_latitude"), record.get("gps_longitude")
    if (lat is None) != (lon is None):
        return "only one GPS coordinate"
    if lat is not None and (abs(lat) > 90 or abs(lon) > 180):
        return f"GPS {lat},{lon} is off the globe"
    if lat == 0 and lon == 0:
        return "GPS 0,0 (a default, not a place)"
    return None


def build_image_assets(settings: ImagoSettings) -> list[dg.AssetsDefinition]:
    """The per-image assets, with code versions that follow the configured OCR languages and vision model."""
    versions = stage_code_versions(settings)

    @dg.asset(deps=[uploads], kinds={"python", "pillow", "parquet"}, code_version=versions["exif"],
              check_specs=[dg.AssetCheckSpec("plausible_dates_and_gps", asset="exif",
                                             description="Capture dates and GPS coordinates are plausible")],
              **_PER_IMAGE)
    def exif(context: dg.AssetExecutionContext, catalog: CatalogResource, blobs: BlobStoreResource,
             lake: LakeResource, settings: SettingsResource, worker_pool: WorkerPoolResource) -> dg.MaterializeResult:
        """Camera metadata (make, model, lens, exposure, capture date with its UTC offset, GPS, orientation)
        read from the original file into the catalog's `exif` table and the lake's `exif` dataset."""
        batch = Batch(context, catalog.get(), "exif", versions["exif"])
        results = _in_parallel(exif_stage, batch.inputs(blobs, settings), worker_pool)
        now = utcnow()
        rows = [{"image_id": r.image_id, "tenant_id": r.tenant_id, "extracted_at": now, **r.value.to_dict()}
                for r in results if r.ok]
        batch.save(results, Exif, rows)
        files = batch.to_lake(lake, EXIF_LAKE_SCHEMA, [{k: v for k, v in row.items() if k != "tenant_id"}
                                                      for row in rows])
        check = batch.check("plausible_dates_and_gps",
                            [CheckOutcome(row["image_id"], row["tenant_id"], problem is None, problem)
                             for row in rows for problem in [exif_plausibility(row, now)]],
                            severity=dg.AssetCheckSeverity.WARN,
                            description="Dates between 1826 and today; GPS on the globe and not 0,0")
        return dg.MaterializeResult(metadata=batch.metadata(results, lake_files_written=files), check_results=[check])

    @dg.asset(deps=[uploads], kinds={"python", "pillow", "jpeg"}, code_version=versions["thumbnail"],
              check_specs=[dg.AssetCheckSpec("thumbnail_decodes", asset="thumbnail",
                                             description="Every stored thumbnail decodes at its recorded size")],
              **_PER_IMAGE)
    def thumbnail(context: dg.AssetExecutionContext, catalog: CatalogResource, blobs: BlobStoreResource,
                  lake: LakeResource, settings: SettingsResource,
                  worker_pool: WorkerPoolResource) -> dg.MaterializeResult:
        """An upright (EXIF-orientation-corrected) JPEG of at most 256 px, stored as a blob."""
        batch = Batch(context, catalog.get(), "thumbnail", versions["thumbnail"])
        results = _in_parallel(thumbnail_stage, batch.inputs(blobs, settings), worker_pool)
        now = utcnow()
        rows = [{"image_id": r.image_id, "tenant_id": r.tenant_id, "blob_key": r.value.blob_key,
                 "width": r.value.width, "height": r.value.height, "byte_size": r.value.byte_size,
                 "created_at": now} for r in results if r.ok]
        batch.save(results, Thumbnail, rows)
        files = batch.to_lake(lake, THUMBNAIL_LAKE_SCHEMA,
                              [{k: v for k, v in row.items() if k not in ("tenant_id", "blob_key")} for row in rows])
        store = blobs.get()
        decoded = []
        for row in rows:
            try:
                with PILImage.open(io.BytesIO(store.get(row["blob_key"]))) as image:
                    image.load()
                    size_ok = image.size == (row["width"], row["height"])
                decoded.append(CheckOutcome(row["image_id"], row["tenant_id"], size_ok,
                                            None if size_ok else f"decoded at {image.size}"))
            except Exception as exc:
                decoded.append(CheckOutcome(row["image_id"], row["tenant_id"], False, f"{type(exc).__name__}"))
        check = batch.check("thumbnail_decodes", decoded, description="Re-read from the blob store and decoded")
        return dg.MaterializeResult(metadata=batch.metadata(results, lake_files_written=files), check_results=[check])

    @dg.asset(deps=[uploads], kinds={"python", "tesseract", "parquet"}, code_version=versions["ocr"],
              check_specs=[dg.AssetCheckSpec("confidence_recorded", asset="ocr",
                                             description="Every text found has a word confidence")],
              **_PER_IMAGE)
    def ocr(context: dg.AssetExecutionContext, catalog: CatalogResource, blobs: BlobStoreResource,
            lake: LakeResource, settings: SettingsResource, vision_provider: VisionResource,
            worker_pool: WorkerPoolResource) -> dg.MaterializeResult:
        """Text in the image (Tesseract, one process per core, pages turned upright first), with mean word
        confidence, language and word boxes. Photos without text cost one small probe pass. When the
        confidence is low and a remote vision provider is configured, it re-reads the text (`engine` says who
        read it)."""
        batch = Batch(context, catalog.get(), "ocr", versions["ocr"])
        results = _in_parallel(ocr_stage, batch.inputs(blobs, settings), worker_pool)
        provider = vision_provider.get_provider()
        now = utcnow()
        rows, fallbacks = [], 0
        for r in results:
            if not r.ok:
                continue
            row = {"image_id": r.image_id, "tenant_id": r.tenant_id, "created_at": now,
                   **r.value.to_dict(), "words": [w.__dict__ for w in r.value.words]}
            low = r.value.confidence is not None and r.value.confidence < settings.ocr_fallback_confidence
            if low and provider.remote:
                reading = _read_text_remotely(provider, blobs, batch.images[r.image_id], context)
                if reading is not None:
                    row.update(text=reading.text, language=reading.language, has_text=bool(reading.text.strip()),
                               engine=provider.name, words=[])
                    fallbacks += 1
            rows.append(row)
        batch.save(results, Ocr, rows)
        batch.catalog.refresh_search([row["image_id"] for row in rows])
        files = batch.to_lake(lake, OCR_LAKE_SCHEMA, [
            {"image_id": row["image_id"], "has_text": row["has_text"], "confidence": row["confidence"],
             "language": row["language"], "mode": row["mode"], "rotation": row["rotation"], "engine": row["engine"],
             "word_count": len(row["words"]), "text_length": len(row["text"]), "created_at": now} for row in rows])
        check = batch.check("confidence_recorded", [
            CheckOutcome(row["image_id"], row["tenant_id"], not (row["has_text"] and row["engine"] == "tesseract"
                                                                 and row["confidence"] is None))
            for row in rows], description="Text read by Tesseract always carries its mean word confidence")
        modes: dict[str, int] = {}
        for row in rows:
            modes[row["mode"]] = modes.get(row["mode"], 0) + 1
        return dg.MaterializeResult(
            metadata=batch.metadata(results, lake_files_written=files, with_text=sum(r["has_text"] for r in rows),
                                    probe_only=modes.get("probe", 0), pages=modes.get("page", 0),
                                    lines=modes.get("line", 0), remote_fallbacks=fallbacks,
                                    engine=f"tesseract {tesseract_version()} ({settings.ocr_languages})"),
            check_results=[check])

    @dg.asset(deps=[uploads], kinds={"python", "tensorflow", "keras", "parquet"},
              code_version=versions["classification"], **_PER_IMAGE)
    def classification(context: dg.AssetExecutionContext, catalog: CatalogResource, blobs: BlobStoreResource,
                       lake: LakeResource) -> dg.MaterializeResult:
        """Cat or dog, with its probability, from the production model of the registry (our Keras CNN): one
        model load per run, batched prediction over the run's images. The code version names the model, so a
        promotion makes older classifications stale."""
        from training.registry import ModelRegistry, load_classifier

        batch = Batch(context, catalog.get(), "classification", versions["classification"])
        store = blobs.get()
        registry = ModelRegistry(batch.catalog, store, Path(settings.resolved_home) / "models")
        model = registry.production()
        classifier = load_classifier(registry, model)
        results: list[StageResult] = []
        decoded: list[tuple[Image, Any]] = []
        for image in batch.images.values():
            started = time.perf_counter()
            try:
                decoded.append((image, classifier.pixels(store.get(image.blob_key))))
            except Exception as exc:
                results.append(StageResult(image.id, image.tenant_id, None, f"{type(exc).__name__}: {exc}",
                                           (time.perf_counter() - started) * 1000))
        started = time.perf_counter()
        predictions = classifier.predict_pixels(np.stack([p for _, p in decoded])) if decoded else []
        per_image_ms = (time.perf_counter() - started) * 1000 / max(1, len(decoded))
        results += [StageResult(image.id, image.tenant_id, prediction, None, per_image_ms)
                    for (image, _), prediction in zip(decoded, predictions)]
        now = utcnow()
        rows = [{"image_id": r.image_id, "tenant_id": r.tenant_id, "label": r.value.label,
                 "probability": r.value.probability, "model_version": model.version, "created_at": now}
                for r in results if r.ok]
        batch.save(results, Classification, rows)
        files = batch.to_lake(lake, CLASSIFICATION_LAKE_SCHEMA,
                              [{k: v for k, v in row.items() if k != "tenant_id"} for row in rows])
        labels: dict[str, int] = {}
        for row in rows:
            labels[row["label"]] = labels.get(row["label"], 0) + 1
        return dg.MaterializeResult(metadata=batch.metadata(
            results, lake_files_written=files, model_version=model.version, cats=labels.get("cat", 0),
            dogs=labels.get("dog", 0)))

    @dg.asset(deps=[exif, thumbnail, ocr, classification], kinds={"python", "gemini", "parquet"},
              code_version=versions["vision"],
              pool=VISION_POOL,
              check_specs=[dg.AssetCheckSpec("output_matches_schema", asset="vision",
                                             description="Description, tags and confidence match the schema")],
              **_PER_IMAGE)
    def vision(context: dg.AssetExecutionContext, catalog: CatalogResource, blobs: BlobStoreResource,
               lake: LakeResource, vision_provider: VisionResource) -> dg.MaterializeResult:
        """A description and tags for each image from the configured provider: `local` (offline default,
        from EXIF, OCR, colours, brightness and orientation) or `gemini` (structured JSON output, retried on
        429 and 5xx, limited by the `vision_provider` concurrency pool)."""
        batch = Batch(context, catalog.get(), "vision", versions["vision"])
        provider = vision_provider.get_provider()
        store = blobs.get()
        scoped = {}
        results: list[StageResult] = []
        for image in batch.images.values():
            tenant = scoped.setdefault(image.tenant_id, batch.catalog.for_tenant(image.tenant_id))
            started = time.perf_counter()
            try:
                thumb = tenant.get_thumbnail(image.id)
                if thumb is None:
                    raise VisionError("no thumbnail to look at (the thumbnail stage failed)")
                exif_row, ocr_row = tenant.get_exif(image.id), tenant.get_ocr(image.id)
                label = tenant.get_classification(image.id)
                output = provider.describe(VisionContext(
                    image_jpeg=store.get(thumb.blob_key), width=image.width, height=image.height,
                    exif={f: getattr(exif_row, f) for f in EXIF_FIELDS} if exif_row else {},
                    ocr_text=ocr_row.text if ocr_row else "", ocr_language=ocr_row.language if ocr_row else None,
                    has_text=bool(ocr_row and ocr_row.has_text),
                    classification={"label": label.label, "probability": label.probability} if label else None))
                results.append(StageResult(image.id, image.tenant_id, output, None,
                                           (time.perf_counter() - started) * 1000))
            except Exception as exc:  # one image's provider failure is recorded on that image only
                message = str(exc) if isinstance(exc, VisionError) else f"{type(exc).__name__}: {exc}"
                results.append(StageResult(image.id, image.tenant_id, None, message,
                                           (time.perf_counter() - started) * 1000))
        now = utcnow()
        rows = [{"image_id": r.image_id, "tenant_id": r.tenant_id, "description": r.value.description,
                 "tags": r.value.tags, "confidence": r.value.confidence, "model_used": provider.name,
                 "created_at": now} for r in results if r.ok]
        batch.save(results, Vision, rows)
        batch.catalog.save_tags({row["image_id"]: (row["tenant_id"], row["tags"]) for row in rows})
        batch.catalog.refresh_search([row["image_id"] for row in rows])
        files = batch.to_lake(lake, VISION_LAKE_SCHEMA, [
            {"image_id": row["image_id"], "tags": row["tags"], "confidence": row["confidence"],
             "model_used": row["model_used"], "created_at": now} for row in rows])
        schema_results = []
        for row in rows:
            try:
                VisionOutput.model_validate({k: row[k] for k in ("description", "tags", "confidence")})
                schema_results.append(CheckOutcome(row["image_id"], row["tenant_id"], True))
            except ValueError as exc:
                schema_results.append(CheckOutcome(row["image_id"], row["tenant_id"], False, str(exc)[:200]))
        check = batch.check("output_matches_schema", schema_results, description="Re-validated as stored")
        return dg.MaterializeResult(metadata=batch.metadata(results, lake_files_written=files,
                                                            model=provider.name, prompt=PROMPT_VERSION),
                                    check_results=[check])

    @dg.asset(deps=[exif, thumbnail, ocr, classification, vision], kinds={"python", "parquet"},
              code_version=SUMMARY_VERSION,
              **_PER_IMAGE)
    def image_summary(context: dg.AssetExecutionContext, catalog: CatalogResource,
                      lake: LakeResource) -> dg.MaterializeResult:
        """Each image's overall status from its stages (done, or failed with the stage and reason), and the
        lake's `images` dataset: one row per image and batch, without file names."""
        started = time.perf_counter()
        ids = [int(key) for key in context.partition_keys]
        images = catalog.get().finish_images(ids, STAGES, claim=context.run.tags.get(CLAIM_TAG))
        files = lake.get().write_batch(
            "images",
            [{**_images_lake_row(i), "tenant_id": i.tenant_id, "date": i.created_at.date(), "run_id": context.run_id}
             for i in images.values()],
            batch_id=context.run_id.replace("-", ""), schema=IMAGES_LAKE_SCHEMA,
        )
        statuses: dict[str, int] = {}
        for image in images.values():
            statuses[image.status] = statuses.get(image.status, 0) + 1
        return dg.MaterializeResult(metadata={
            "images": len(images), "done": statuses.get("done", 0), "failed": statuses.get("failed", 0),
            "lake_files_written": len(files),
            "duration_s": dg.MetadataValue.float(round(time.perf_counter() - started, 3)),
        })

    return [exif, thumbnail, ocr, classification, vision, image_summary]


def _read_text_remotely(provider, blobs: BlobStoreResource, image: Image, context: dg.AssetExecutionContext):
    """The OCR fallback: an upright JPEG of at most 1600 px, read by the vision provider (None on failure)."""
    try:
        with PILImage.open(io.BytesIO(blobs.get().get(image.blob_key))) as original:
            upright = ImageOps.exif_transpose(original).convert("RGB")
        upright.thumbnail((1600, 1600))
        buffer = io.BytesIO()
        upright.save(buffer, format="JPEG", quality=90)
        return provider.read_text(buffer.getvalue())
    except Exception as exc:
        context.log.warning(f"ocr fallback failed for one image: {type(exc).__name__}")
        return None


def _images_lake_row(image: Image) -> dict[str, Any]:
    error_stage = image.error.split(":", 1)[0] if image.error else None
    return {"image_id": image.id, "sha256": image.sha256, "media_type": image.media_type,
            "byte_size": image.byte_size, "width": image.width, "height": image.height, "status": image.status,
            "error_stage": error_stage, "created_at": image.created_at, "processed_at": image.processed_at}


PER_IMAGE_ASSET_KEYS = (*STAGES, "image_summary")

process_images_job = dg.define_asset_job(
    "process_images",
    selection=dg.AssetSelection.assets(*PER_IMAGE_ASSET_KEYS),
    partitions_def=image_partitions,
    # One process per run; the images of the batch are spread over the cores by the assets themselves.
    executor_def=dg.in_process_executor,
    description="Enrich a batch of images: EXIF, thumbnail, OCR, classification, vision, then each image's "
    "overall status.",
)
