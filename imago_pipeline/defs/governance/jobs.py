"""Scheduled maintenance: the daily retention purge and the nightly batch reprocessing.

Both are also manual: launch `retention_job` or `batch_reprocess_job` from the Dagster UI (the latter with
filters in its config), or use `imago purge` and `imago reprocess` on the command line.
"""

from typing import Callable

import dagster as dg

from imago_pipeline.defs.resources import CatalogResource, LakeResource, MaintenanceResource
from imago_pipeline.core.retention import purge_expired


@dg.asset(group_name="governance", kinds={"python", "sql"}, owners=["team:imago"])
def retention_purge(context: dg.AssetExecutionContext, catalog: CatalogResource, lake: LakeResource,
                    maintenance: MaintenanceResource) -> dg.MaterializeResult:
    """Purges inference logs older than `inference_log_retention_days` (180) and feedback older than
    `feedback_retention_days` (365) from the catalog and the lake, with an audit row per table. Everything
    downstream (the monitoring snapshot and the SQL models built on it) is rebuilt in the same run."""
    results = purge_expired(catalog.get(), lake.get(), {
        "inference_log": maintenance.inference_log_retention_days,
        "feedback": maintenance.feedback_retention_days})
    metadata = {}
    for result in results:
        metadata[f"{result.table}_cutoff"] = dg.MetadataValue.timestamp(result.cutoff)
        metadata[f"{result.table}_catalog_rows_purged"] = result.catalog_rows
        metadata[f"{result.table}_lake_rows_purged"] = result.lake_rows
    context.log.info("; ".join(f"{r.table}: {r.catalog_rows} catalog and {r.lake_rows} lake rows before "
                               f"{r.cutoff:%Y-%m-%d}" for r in results))
    return dg.MaterializeResult(metadata=metadata)


retention_job = dg.define_asset_job(
    "retention_job", selection=dg.AssetSelection.assets(retention_purge).downstream(),
    description="Purge expired inference logs and feedback, then rebuild what is built from them.")

retention_schedule = dg.ScheduleDefinition(job=retention_job, cron_schedule="30 3 * * *", name="retention_schedule",
                                           default_status=dg.DefaultScheduleStatus.RUNNING,
                                           description="Daily GDPR retention purge")


class BatchReprocessConfig(dg.Config):
    """Filters of a batch reprocessing; the nightly schedule uses the defaults (everything, the budget)."""

    tenant: str | None = None
    created_from: str | None = None  # ISO date or time, inclusive
    created_to: str | None = None  # exclusive
    stages: list[str] = []
    budget: int | None = None  # default: the `reprocess_budget` setting
    stale: bool = True
    failed: bool = True
    dry_run: bool = False


def build_batch_reprocessing(asset_graph: Callable[[], object]) -> tuple[dg.JobDefinition, dg.ScheduleDefinition]:
    """The batch reprocessing job and its nightly schedule. `asset_graph` gives the code location's asset
    graph (current code versions and what depends on what); it is called when the job runs."""

    @dg.op(out=dg.Out(dict))
    def requeue_stale_and_failed(context: dg.OpExecutionContext, config: BatchReprocessConfig,
                                 catalog: CatalogResource, maintenance: MaintenanceResource) -> dg.Output:
        """Requeue stale and failed images, oldest first, within the budget; the upload sensor runs them in
        ranged batches. Failed images are retried a bounded number of times with a growing wait, then
        dead-lettered (they stay failed, with their reason, visible in the API)."""
        from imago_pipeline.dagster_internals import claim_alive
        from imago_pipeline.core.reprocessing import ReprocessFilters, apply_batch_plan, plan_batch_reprocessing

        cat = catalog.get()
        try:
            filters = ReprocessFilters.resolve(cat, tenant=config.tenant, created_from=config.created_from,
                                               created_to=config.created_to, stages=config.stages)
        except ValueError as exc:
            raise dg.Failure(str(exc)) from exc
        budget = maintenance.reprocess_budget if config.budget is None else config.budget
        plan = plan_batch_reprocessing(cat, asset_graph(), filters=filters, budget=budget,
                                       max_retries=maintenance.reprocess_max_retries, include_stale=config.stale,
                                       include_failed=config.failed, claim_grace_s=maintenance.claim_grace_s,
                                       claim_alive=lambda claim: claim_alive(context.instance, claim))
        if not config.dry_run:
            apply_batch_plan(cat, plan, backoff_s=maintenance.reprocess_backoff_s)
        summary = {"stranded_requeued": len(plan.stranded), "stale_requeued": len(plan.stale),
                   "failed_retried": len(plan.retries),
                   "dead_lettered": len(plan.dead_lettered) + len(plan.stranded_dead), "retry_not_due": plan.waiting,
                   "deferred_past_budget": plan.deferred, "budget": budget, "dry_run": config.dry_run}
        context.log.info(", ".join(f"{k}={v}" for k, v in summary.items()))
        return dg.Output(summary, metadata={
            **summary,
            "dead_lettered_image_ids": dg.MetadataValue.text(
                ",".join(map(str, (plan.dead_lettered + plan.stranded_dead)[:200])))})

    @dg.job(description="Requeue stale and failed images (filters in the config: tenant, dates, stages, budget)",
            tags={"imago/kind": "maintenance"})
    def batch_reprocess_job():
        requeue_stale_and_failed()

    schedule = dg.ScheduleDefinition(job=batch_reprocess_job, cron_schedule="0 2 * * *",
                                     name="nightly_reprocess_schedule",
                                     default_status=dg.DefaultScheduleStatus.RUNNING,
                                     description="Nightly: stale and failed images, oldest first, within the budget")
    return batch_reprocess_job, schedule
