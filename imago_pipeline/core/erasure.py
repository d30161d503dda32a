"""Erasing one image everywhere it was stored (GDPR right to erasure).

The blob store (original and thumbnail), every catalog row and the search index, its rows in every
Parquet table of the lake, and its Dagster partition with the partition's event history. What is left is an
audit row with counts per store, never the erased content. Used by `DELETE /images/{id}`; an erasure cut
short is finished by the next `DELETE` of the image or by the daily retention job.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

from imago_pipeline.core.catalog import Catalog
from imago_pipeline.core.catalog.models import PendingErasure, utcnow
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
    """Erase the tenant's image; None when the tenant has no such image and no unfinished erasure of it.

    The catalog first, in one transaction that also records the erasure as pending: from then on the API
    and new runs no longer see the image. Then the files, the lake rows and, with `forget_runs(image_id)`
    (which returns how many events went), what the orchestrator recorded: its Dagster partition and that
    partition's events. The audit row replaces the pending record once all of that is done. Erasing an
    image whose erasure a crash or an outage cut short (its catalog rows already gone) finishes it: a
    retried `DELETE` succeeds instead of answering 404 and leaving the lake rows for good."""
    tenant = catalog.for_tenant(tenant_id)
    deleted = tenant.delete_image(image_id)
    if deleted is not None:
        counts, pending = deleted
        report = ErasureReport(image_id=image_id, catalog_rows=counts)
    else:
        found = catalog.pending_erasures.of_image(tenant_id, image_id)
        if found is None:
            return None
        pending, report = found, ErasureReport(image_id=image_id, catalog_rows={"earlier": found.catalog_rows})
    return _finish(catalog, blobs, lake, pending, report, forget_runs)


def finish_pending_erasures(catalog: Catalog, blobs: BlobStore, lake: Lake, *,
                            forget_runs: Callable[[int], int] | None = None,
                            older_than: timedelta = timedelta(minutes=10)) -> list[ErasureReport]:
    """Finish the erasures a crash or an outage cut short (the daily retention job calls it). Those younger
    than `older_than` are left to the request erasing them now."""
    reports = []
    for pending in catalog.pending_erasures.requested_before(utcnow() - older_than):
        report = ErasureReport(image_id=pending.image_id, catalog_rows={"earlier": pending.catalog_rows})
        reports.append(_finish(catalog, blobs, lake, pending, report, forget_runs))
    return reports


def _finish(catalog: Catalog, blobs: BlobStore, lake: Lake, pending: PendingErasure, report: ErasureReport,
            forget_runs: Callable[[int], int] | None) -> ErasureReport:
    """Every store outside the catalog; each step is idempotent, so a finisher that dies is replaced."""
    tenant_id, image_id = pending.tenant_id, pending.image_id
    for key in (pending.blob_key, thumbnail_key(tenant_id, image_id)):
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
    catalog.pending_erasures.finish(pending, report.as_audit())
    return report
