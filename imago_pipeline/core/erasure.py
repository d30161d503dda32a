"""Erasing one image everywhere it was stored (GDPR right to erasure).

The blob store (original and thumbnail), every catalog row and the search index, its rows in every
Parquet table of the lake, and its Dagster partition with the partition's event history. What is left is an
audit row with counts per store, never the erased content. Used by `DELETE /images/{id}`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from imago_pipeline.core.catalog import Catalog
from imago_pipeline.core.stores.blobs import BlobStore, thumbnail_key
from imago_pipeline.core.stores.lake import Lake
from imago_pipeline.core.stores.lake_tables import LAKE_TABLES


@dataclass
class ErasureReport:
    image_id: int
    catalog_rows: dict[str, int] = field(default_factory=dict)
    blobs_deleted: int = 0
    lake_rows: dict[str, int] = field(default_factory=dict)
    dagster_events: int = 0

    def as_audit(self) -> dict:
        """Counts only: the image id is not kept either (nothing links the audit row to the content)."""
        return {"catalog_rows": sum(self.catalog_rows.values()), "blobs": self.blobs_deleted,
                "lake_rows": sum(self.lake_rows.values()), "dagster_events": self.dagster_events}


def erase_image(catalog: Catalog, blobs: BlobStore, lake: Lake, *, tenant_id: int, image_id: int,
                forget_runs: Callable[[int], int] | None = None) -> ErasureReport | None:
    """Erase the tenant's image; None when the tenant has no such image (nothing is touched).

    `forget_runs(image_id)` removes what the orchestrator recorded about the image (its Dagster partition
    and that partition's events) and returns how many events went."""
    tenant = catalog.for_tenant(tenant_id)
    image = tenant.get_image(image_id)
    if image is None:
        return None
    report = ErasureReport(image_id=image_id)
    # The catalog first: from then on the API and new runs no longer see the image.
    report.catalog_rows = tenant.delete_image(image_id) or {}
    for key in (image.blob_key, thumbnail_key(tenant_id, image_id)):
        if blobs.exists(key):
            blobs.delete(key)
            report.blobs_deleted += 1
    for table in LAKE_TABLES.values():
        if "image_id" in table.schema.names:
            removed = lake.delete_rows(table.name, "image_id", [image_id], tenant_id=tenant_id)
            if removed:
                report.lake_rows[table.name] = removed
    if forget_runs is not None:
        report.dagster_events = forget_runs(image_id)
    catalog.audit_log.record("erase_image", tenant_id=tenant_id, detail=report.as_audit())
    return report
