"""Lake compaction as a Dagster asset: every half hour (declarative automation), each per-image lake table's
new batch files folded into one file per tenant and month (`core/analytics/compaction.py`)."""

import dagster as dg

from imago_pipeline.core.analytics.compaction import compact_lake
from imago_pipeline.defs.resources import LakeResource

PER_IMAGE_LAKE_WRITERS = ("exif", "thumbnail", "ocr", "embedding", "classification", "vision", "image_summary")

# Every half hour, once nothing is compacting; incremental, so a run with nothing new costs a directory
# listing. Evaluated by the SQL models' automation sensor.
COMPACTION_AUTOMATION = (dg.AutomationCondition.cron_tick_passed("*/30 * * * *")
                         & ~dg.AutomationCondition.in_progress()).with_label("every 30 minutes")


@dg.asset(deps=[dg.AssetKey(name) for name in PER_IMAGE_LAKE_WRITERS], group_name="lake",
          kinds={"duckdb", "parquet"}, owners=["team:imago"], automation_condition=COMPACTION_AUTOMATION,
          pool="sql_models")
def lake_compaction(context: dg.AssetExecutionContext, lake: LakeResource) -> dg.MaterializeResult:
    """The per-image lake tables rewritten into few large files per tenant and month, newest row per image,
    swapped in atomically; only files written since the last run are read. Queries then read about a
    hundred files per table instead of one per batch and day. Erasure and retention reach the compacted
    files like any other."""
    reports = compact_lake(lake.get())
    for report in reports:
        if report.tail_files:
            context.log.info(f"{report.table}: {report.tail_files} files folded into {report.months} "
                             f"tenant-months ({report.rows} rows) in {report.seconds:.1f} s")
    return dg.MaterializeResult(metadata={
        "files_folded": sum(r.tail_files for r in reports),
        "tenant_months_rewritten": sum(r.months for r in reports),
        "files_deleted_after_grace": sum(r.deleted_files for r in reports),
        "duration_s": dg.MetadataValue.float(round(sum(r.seconds for r in reports), 3)),
        **{f"{r.table}_rows_rewritten": r.rows for r in reports},
    })
