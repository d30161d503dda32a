"""Per-image assets. One Dagster partition per image id; a run materializes a contiguous range of them.

Each asset loads its batch from the catalog, spreads the per-image work over the cores, writes catalog rows
and stage status in one transaction, appends the batch to the Parquet lake, and returns metadata about
the batch only (counts, timings): file names, GPS and text never go into Dagster's event log, which our
retention purges do not reach.
"""


import time
from datetime import datetime
from typing import Any, Callable, Sequence

import dagster as dg
import pyarrow as pa

from imago_pipeline.catalog import Catalog, StageOutcome
from imago_pipeline.catalog.models import Exif, Image, Thumbnail, utcnow
from imago_pipeline.defs.resources import BlobStoreResource, CatalogResource, LakeResource, SettingsResource
from imago_pipeline.imaging.exif import EXIF_FIELDS
from imago_pipeline.parallel import map_in_processes
from imago_pipeline.stages import StageInput, StageResult, exif_stage, thumbnail_stage, worker_crashed

image_partitions = dg.DynamicPartitionsDefinition(name="images")

uploads = dg.AssetSpec(
    "uploads",
    group_name="ingest",
    kinds={"sql", "folder"},
    description="Images registered through the API, the drop folder or `imago ingest`: bytes in the blob "
    "store, a `pending` row in the catalog. The upload sensor turns new rows into `images` partitions.",
)

ENRICHMENT_STAGES = ("exif", "thumbnail")

_PER_IMAGE: dict[str, Any] = dict(
    partitions_def=image_partitions,
    backfill_policy=dg.BackfillPolicy.single_run(),
    group_name="enrichment",
    owners=["team:imago"],
    retry_policy=dg.RetryPolicy(max_retries=2, delay=2, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS),
)

EXIF_LAKE_SCHEMA = pa.schema(
    [("image_id", pa.int64())]
    + [(name, pa.float64()) if name in ("exposure_time", "f_number", "focal_length_mm", "gps_latitude",
                                        "gps_longitude", "gps_altitude")
       else (name, pa.int64()) if name in ("iso", "focal_length_35mm", "orientation", "width", "height")
       else (name, pa.string()) for name in EXIF_FIELDS]
    + [("extracted_at", pa.timestamp("us", tz="UTC")), ("run_id", pa.string())]
)
THUMBNAIL_LAKE_SCHEMA = pa.schema([
    ("image_id", pa.int64()), ("width", pa.int64()), ("height", pa.int64()), ("byte_size", pa.int64()),
    ("created_at", pa.timestamp("us", tz="UTC")), ("run_id", pa.string()),
])
IMAGES_LAKE_SCHEMA = pa.schema([
    ("image_id", pa.int64()), ("sha256", pa.string()), ("media_type", pa.string()), ("byte_size", pa.int64()),
    ("width", pa.int64()), ("height", pa.int64()), ("status", pa.string()), ("error_stage", pa.string()),
    ("created_at", pa.timestamp("us", tz="UTC")), ("processed_at", pa.timestamp("us", tz="UTC")),
    ("run_id", pa.string()),
])


def _batch(context: dg.AssetExecutionContext, catalog: Catalog) -> tuple[list[int], dict[int, Image]]:
    ids = [int(key) for key in context.partition_keys]
    return ids, catalog.images_by_id(ids)  # an image erased since it was queued is simply absent


def _run_stage(
    context: dg.AssetExecutionContext,
    *,
    stage: str,
    work: Callable[[StageInput], StageResult],
    table: type,
    to_row: Callable[[StageResult], dict[str, Any]],
    to_lake: Callable[[StageResult, Image], dict[str, Any]],
    lake_schema: pa.Schema,
    catalog: Catalog,
    blobs: BlobStoreResource,
    lake: LakeResource,
    settings: SettingsResource,
) -> dg.MaterializeResult:
    started = time.perf_counter()
    ids, images = _batch(context, catalog)
    store = blobs.get()
    items = [StageInput(image_id=i.id, tenant_id=i.tenant_id, blob_key=i.blob_key, store=store,
                        max_pixels=settings.max_pixels, thumbnail_size=settings.thumbnail_size)
             for i in images.values()]
    results = map_in_processes(work, items, settings.workers, on_crash=worker_crashed)
    succeeded = [r for r in results if r.ok]
    outcomes = [StageOutcome(r.image_id, r.tenant_id, "done" if r.ok else "failed", r.error, r.duration_ms)
                for r in results]
    catalog.save_stage(stage, outcomes, table, [to_row(r) for r in succeeded], run_id=context.run_id)
    files = lake.get().write_batch(
        stage, [{**to_lake(r, images[r.image_id]), "tenant_id": r.tenant_id,
                 "date": images[r.image_id].created_at.date(), "run_id": context.run_id} for r in succeeded],
        batch_id=context.run_id.replace("-", ""), schema=lake_schema,
    )
    elapsed = time.perf_counter() - started
    failed = len(results) - len(succeeded)
    if failed:
        context.log.warning(f"{stage}: {failed} of {len(results)} images failed; see their stage status")
    work_ms = sorted(r.duration_ms for r in results) or [0.0]
    return dg.MaterializeResult(metadata={
        "images": len(results),
        "succeeded": len(succeeded),
        "failed": failed,
        "missing_from_catalog": len(ids) - len(images),
        "duration_s": dg.MetadataValue.float(round(elapsed, 3)),
        "images_per_s": dg.MetadataValue.float(round(len(results) / elapsed, 2) if elapsed else 0.0),
        "p50_image_ms": dg.MetadataValue.float(round(work_ms[len(work_ms) // 2], 1)),
        "max_image_ms": dg.MetadataValue.float(round(work_ms[-1], 1)),
        "lake_files_written": len(files),
        "workers": settings.workers,
    })


@dg.asset(deps=[uploads], kinds={"python", "pillow", "parquet"}, code_version="exif-v1", **_PER_IMAGE)
def exif(context: dg.AssetExecutionContext, catalog: CatalogResource, blobs: BlobStoreResource,
         lake: LakeResource, settings: SettingsResource) -> dg.MaterializeResult:
    """Camera metadata (make, model, lens, exposure, date with UTC offset, GPS, orientation…) read from
    the original file; written to the catalog's `exif` table and the lake's `exif` dataset."""
    now = utcnow()
    return _run_stage(
        context, stage="exif", work=exif_stage, table=Exif,
        to_row=lambda r: {"image_id": r.image_id, "tenant_id": r.tenant_id, "extracted_at": now, **r.value.to_dict()},
        to_lake=lambda r, _image: {"image_id": r.image_id, **r.value.to_dict(), "extracted_at": now},
        lake_schema=EXIF_LAKE_SCHEMA, catalog=catalog.get(), blobs=blobs, lake=lake, settings=settings,
    )


@dg.asset(deps=[uploads], kinds={"python", "pillow", "jpeg"}, code_version="thumbnail-v1", **_PER_IMAGE)
def thumbnail(context: dg.AssetExecutionContext, catalog: CatalogResource, blobs: BlobStoreResource,
              lake: LakeResource, settings: SettingsResource) -> dg.MaterializeResult:
    """An upright (EXIF-orientation-corrected) JPEG of about 256 px, stored as a blob next to the original."""
    now = utcnow()
    return _run_stage(
        context, stage="thumbnail", work=thumbnail_stage, table=Thumbnail,
        to_row=lambda r: {"image_id": r.image_id, "tenant_id": r.tenant_id, "blob_key": r.value.blob_key,
                          "width": r.value.width, "height": r.value.height, "byte_size": r.value.byte_size,
                          "created_at": now},
        to_lake=lambda r, _image: {"image_id": r.image_id, "width": r.value.width, "height": r.value.height,
                                   "byte_size": r.value.byte_size, "created_at": now},
        lake_schema=THUMBNAIL_LAKE_SCHEMA, catalog=catalog.get(), blobs=blobs, lake=lake, settings=settings,
    )


def _images_lake_row(image: Image) -> dict[str, Any]:
    error_stage = image.error.split(":", 1)[0] if image.error else None
    return {"image_id": image.id, "sha256": image.sha256, "media_type": image.media_type,
            "byte_size": image.byte_size, "width": image.width, "height": image.height, "status": image.status,
            "error_stage": error_stage, "created_at": image.created_at, "processed_at": image.processed_at}


@dg.asset(deps=[exif, thumbnail], kinds={"python", "parquet"}, code_version="image-summary-v1", **_PER_IMAGE)
def image_summary(context: dg.AssetExecutionContext, catalog: CatalogResource,
                  lake: LakeResource) -> dg.MaterializeResult:
    """Each image's overall status from its stages (done, or failed with the stage and reason), and the
    lake's `images` dataset: one row per image and batch, without file names."""
    started = time.perf_counter()
    ids = [int(key) for key in context.partition_keys]
    images = catalog.get().finish_images(ids, ENRICHMENT_STAGES)
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
        "images": len(images),
        "done": statuses.get("done", 0),
        "failed": statuses.get("failed", 0),
        "lake_files_written": len(files),
        "duration_s": dg.MetadataValue.float(round(time.perf_counter() - started, 3)),
    })


PER_IMAGE_ASSETS: Sequence[dg.AssetsDefinition] = (exif, thumbnail, image_summary)

process_images_job = dg.define_asset_job(
    "process_images",
    selection=dg.AssetSelection.assets(*PER_IMAGE_ASSETS),
    partitions_def=image_partitions,
    # One process per run; the images of the batch are spread over the cores by the assets themselves.
    executor_def=dg.in_process_executor,
    description="Enrich a batch of images: EXIF and thumbnail, then each image's overall status.",
)
