"""The image summary: each image's overall status from its stages (done, or failed with the stage and
reason), and the lake's `images` table (one row per image and batch, without file names)."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from imago_pipeline.core.catalog import Catalog
from imago_pipeline.core.catalog.models import Image
from imago_pipeline.core.enrichment.batch import STAGES
from imago_pipeline.core.stores import lake_tables
from imago_pipeline.core.stores.lake import Lake


def lake_row(image: Image) -> dict[str, Any]:
    error_stage = image.error.split(":", 1)[0] if image.error else None
    return {"image_id": image.id, "sha256": image.sha256, "media_type": image.media_type,
            "byte_size": image.byte_size, "width": image.width, "height": image.height, "status": image.status,
            "error_stage": error_stage, "created_at": image.created_at, "processed_at": image.processed_at}


def run(catalog: Catalog, lake: Lake, image_ids: list[int], *, run_id: str, claim: str | None) -> dict[str, Any]:
    """Finish the images this run holds (`claim`) and write their summary rows; returns counts."""
    started = time.perf_counter()
    images = catalog.work.finish(image_ids, STAGES, claim=claim)
    catalog.results.refresh_search(list(images))  # once every stage has written: what they read, searchable
    files = lake.write_batch(
        lake_tables.IMAGES.name,
        [{**lake_row(i), "tenant_id": i.tenant_id, "date": i.created_at.date(), "run_id": run_id}
         for i in images.values()],
        batch_id=run_id.replace("-", ""), schema=lake_tables.IMAGES.schema)
    statuses = Counter(image.status for image in images.values())
    return {"images": len(images), "done": statuses["done"], "failed": statuses["failed"],
            "lake_files_written": len(files), "duration_s": round(time.perf_counter() - started, 3)}
