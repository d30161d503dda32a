"""The nightly batch reprocessing (also by hand: `batch_reprocess_job` in the Dagster UI with filters in
its config, or `imago reprocess`): stranded, stale and failed images requeued within a budget."""

import dagster as dg

from imago_pipeline.core.claims import LANE_TAG
from imago_pipeline.core.reprocessing import ReprocessFilters, apply_batch_plan, plan_batch_reprocessing
from imago_pipeline.dagster_internals import claim_alive
from imago_pipeline.defs.reprocessing.planning import current_code_versions
from imago_pipeline.defs.resources import CatalogResource, SettingsResource


class BatchReprocessConfig(dg.Config):
    """Filters of a batch reprocessing; the nightly schedule uses the defaults (everything, the budget)."""

    tenant: str | None = None
    created_from: str | None = None  # ISO date or time, inclusive
    created_to: str | None = None  # exclusive
    stages: list[str] = []  # noqa: RUF012  (a pydantic field: each instance gets its own list)
    budget: int | None = None  # default: the `reprocess_budget` setting
    stale: bool = True
    failed: bool = True
    dry_run: bool = False


@dg.op(out=dg.Out(dict))
def requeue_stale_and_failed(context: dg.OpExecutionContext, config: BatchReprocessConfig,
                             catalog: CatalogResource, settings: SettingsResource) -> dg.Output:
    """Requeue stale and failed images, oldest first, within the budget; the upload sensor runs them in
    ranged batches. Failed images are retried a bounded number of times with a growing wait, then
    dead-lettered (they stay failed, with their reason, visible in the API)."""
    cat, config_ = catalog.get(), settings.get()
    try:
        filters = ReprocessFilters.resolve(cat, tenant=config.tenant, created_from=config.created_from,
                                           created_to=config.created_to, stages=config.stages)
    except ValueError as exc:
        raise dg.Failure(str(exc)) from exc
    budget = config_.reprocess_budget if config.budget is None else config.budget
    plan = plan_batch_reprocessing(cat, current_code_versions(config_, cat), filters=filters, budget=budget,
                                   max_retries=config_.reprocess_max_retries, include_stale=config.stale,
                                   include_failed=config.failed, claim_grace_s=config_.claim_grace_s,
                                   claim_alive=lambda claim: claim_alive(context.instance, claim))
    if not config.dry_run:
        apply_batch_plan(cat, plan, backoff_s=config_.reprocess_backoff_s)
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
        tags={"imago/kind": "maintenance", LANE_TAG: "bulk"})
def batch_reprocess_job():
    requeue_stale_and_failed()


nightly_reprocess_schedule = dg.ScheduleDefinition(
    job=batch_reprocess_job, cron_schedule="0 2 * * *", name="nightly_reprocess_schedule",
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Nightly: stranded, stale and failed images, oldest first, within the budget")
