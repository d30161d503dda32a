"""Erasing one image everywhere it was stored (GDPR right to erasure).

The blob store (original and thumbnail), every catalog row and the search index, its rows in every
Parquet table of the lake, and its Dagster partition with the partition's event history. What is left is an
audit row with counts per store, never the erased content. Used by `DELETE /images/{id}`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from imago_pipeline.core.catalog import Catalog
from imago_pipeline.core.stores.blobs import BlobStore, thumbnail_key
from imago_pipeline.core.stores.lake import Lake

IMAGE_PARTITIONS = "images"


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
                dagster_instance=None) -> ErasureReport | None:
    """Erase the tenant's image; None when the tenant has no such image (nothing is touched)."""
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
    for table in lake.tables():
        removed = lake.delete_rows(table, "image_id", [image_id], tenant_id=tenant_id)
        if removed:
            report.lake_rows[table] = removed
    if dagster_instance is not None:
        report.dagster_events = erase_dagster_partition(dagster_instance, IMAGE_PARTITIONS, str(image_id))
    catalog.audit("erase_image", tenant_id=tenant_id, detail=report.as_audit())
    return report


def erase_dagster_partition(instance, partitions_def_name: str, partition_key: str) -> int:
    """Delete a dynamic partition and every event recorded for it; returns the events deleted.

    Dagster's own `wipe_asset_partitions` is not implemented by its SQL event logs (SQLite, Postgres), so
    this deletes the partition's rows from the event log tables directly, then drops the cached asset
    status (Dagster recomputes it from what is left).
    """
    from dagster._core.storage.event_log.schema import (
        AssetCheckExecutionsTable,
        AssetEventTagsTable,
        AssetKeyTable,
        SqlEventLogStorageTable,
    )
    from dagster._serdes import deserialize_value
    from sqlalchemy import delete, select, update

    storage = instance.event_log_storage
    events = SqlEventLogStorageTable
    with storage.index_connection() as connection:
        ids = [row[0] for row in connection.execute(select(events.c.id).where(events.c.partition == partition_key))]
        asset_keys = {row[0] for row in connection.execute(
            select(events.c.asset_key).where(events.c.partition == partition_key).distinct())}
        if ids:
            connection.execute(delete(AssetEventTagsTable).where(AssetEventTagsTable.c.event_id.in_(ids)))
            connection.execute(delete(events).where(events.c.id.in_(ids)))
        connection.execute(delete(AssetCheckExecutionsTable)
                           .where(AssetCheckExecutionsTable.c.partition == partition_key))
        # The asset row caches its latest materialization: forget it when it was this partition's.
        for row in connection.execute(select(AssetKeyTable.c.id, AssetKeyTable.c.last_materialization)
                                      .where(AssetKeyTable.c.asset_key.in_(asset_keys))):
            if row.last_materialization and _partition_of(deserialize_value, row.last_materialization) == partition_key:
                connection.execute(update(AssetKeyTable).where(AssetKeyTable.c.id == row.id)
                                   .values(last_materialization=None, cached_status_data=None))
    if partition_key in instance.get_dynamic_partitions(partitions_def_name):
        instance.delete_dynamic_partition(partitions_def_name, partition_key)
    from dagster import AssetKey

    instance.wipe_asset_cached_status([AssetKey.from_db_string(key) for key in asset_keys if key])
    return len(ids)


def _partition_of(deserialize_value, serialized: str) -> str | None:
    try:
        entry = deserialize_value(serialized)
        event = getattr(entry, "dagster_event", None)
        return event.partition if event is not None else None
    except Exception:  # an older or unknown record shape: leave it
        return None
