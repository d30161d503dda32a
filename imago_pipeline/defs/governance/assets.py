"""Governance: the daily GDPR retention purge, the sweep of stored files no row points at and the end of
erasures cut short (also by hand: `retention_job` in the Dagster UI, `imago purge`)."""

import dagster as dg

from imago_pipeline.core.enrichment.batch import IMAGE_PARTITIONS
from imago_pipeline.core.erasure import finish_pending_erasures
from imago_pipeline.core.orphan_blobs import sweep_orphan_blobs
from imago_pipeline.core.retention import purge_expired
from imago_pipeline.defs.resources import BlobStoreResource, CatalogResource, LakeResource, SettingsResource


@dg.asset(group_name="governance", kinds={"python", "sql"}, owners=["team:imago"])
def retention_purge(context: dg.AssetExecutionContext, catalog: CatalogResource, lake: LakeResource,
                    settings: SettingsResource) -> dg.MaterializeResult:
    """Purges inference logs older than `inference_log_retention_days` (180) and feedback older than
    `feedback_retention_days` (365) from the catalog and the lake, with an audit row per table. Everything
    downstream (the monitoring snapshot and the SQL models built on it) is rebuilt in the same run."""
    config = settings.get()
    results = purge_expired(catalog.get(), lake.get(), config.retention_days)
    metadata = {}
    for result in results:
        metadata[f"{result.table}_cutoff"] = dg.MetadataValue.timestamp(result.cutoff)
        metadata[f"{result.table}_catalog_rows_purged"] = result.catalog_rows
        metadata[f"{result.table}_lake_rows_purged"] = result.lake_rows
    context.log.info("; ".join(f"{r.table}: {r.catalog_rows} catalog and {r.lake_rows} lake rows before "
                               f"{r.cutoff:%Y-%m-%d}" for r in results))
    return dg.MaterializeResult(metadata=metadata)


@dg.asset(group_name="governance", kinds={"python"}, owners=["team:imago"])
def unfinished_erasures(context: dg.AssetExecutionContext, catalog: CatalogResource, blobs: BlobStoreResource,
                        lake: LakeResource) -> dg.MaterializeResult:
    """Finishes the erasures that a crash or an outage cut short after the image's catalog rows went: its
    files, lake rows and Dagster partition (each erasure is recorded as pending with the catalog deletion;
    those under 10 minutes old are left to the request erasing them). An audit row for each. Then erases
    the Dagster partitions an erasure had to leave to a run that still named them (`partition_still_named`)."""
    from imago_pipeline.dagster_internals import erase_dagster_partition, forget_erased_partitions

    reports = finish_pending_erasures(catalog.get(), blobs.get(), lake.get(), forget_runs=lambda image_id: (
        erase_dagster_partition(context.instance, IMAGE_PARTITIONS, str(image_id))))
    if reports:
        context.log.warning(f"{len(reports)} erasures cut short were finished")
    partitions = forget_erased_partitions(context.instance, IMAGE_PARTITIONS, catalog.get().work.existing)
    return dg.MaterializeResult(metadata={"erasures_finished": len(reports),
                                          "lake_rows_deleted": sum(sum(r.lake_rows.values()) for r in reports),
                                          "files_deleted": sum(r.blobs_deleted for r in reports),
                                          "partitions_erased": partitions})


class OrphanSweepConfig(dg.Config):
    force: bool = False  # delete even when the orphans are more than 5% of the files judged


@dg.asset(group_name="governance", kinds={"python"}, owners=["team:imago"])
def orphan_blob_sweep(context: dg.AssetExecutionContext, config: OrphanSweepConfig, catalog: CatalogResource,
                      blobs: BlobStoreResource) -> dg.MaterializeResult:
    """Deletes stored originals and thumbnails that no catalog row points at, once a day old: what an
    upload that never committed, or a run for an image erased meanwhile, left behind (nobody could erase
    them through the API). An audit row with the counts when something went. Fails, deleting nothing,
    when the orphans are more than 5% of the files judged (a catalog that does not match the store) unless
    run with `force`."""
    report = sweep_orphan_blobs(catalog.get(), blobs.get(), force=config.force)
    metadata = {"files_scanned": report.scanned, "orphans": report.orphans, "orphans_deleted": report.deleted,
                "orphan_bytes": report.orphan_bytes, "left_alone": report.unknown}
    if report.refused:
        raise dg.Failure(description=report.refused, metadata=metadata, allow_retries=False)
    context.log.info(f"{report.scanned} files looked at, {report.deleted} orphans deleted "
                     f"({report.orphan_bytes} bytes); {report.unknown} left alone (unknown layout or tenant)")
    return dg.MaterializeResult(metadata=metadata)


retention_job = dg.define_asset_job(
    "retention_job", selection=dg.AssetSelection.assets(retention_purge).downstream()
    | dg.AssetSelection.assets(orphan_blob_sweep, unfinished_erasures),
    description="Purge expired inference logs and feedback, then rebuild what is built from them; delete "
                "stored files no row points at; finish erasures cut short.")

retention_schedule = dg.ScheduleDefinition(job=retention_job, cron_schedule="30 3 * * *", name="retention_schedule",
                                           default_status=dg.DefaultScheduleStatus.RUNNING,
                                           description="Daily GDPR retention purge and orphan-file sweep")
