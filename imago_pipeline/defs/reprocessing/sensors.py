"""Sensors that redo work: stranded images (their run died), stale stages (a code or model version changed)."""

import hashlib

import dagster as dg

from imago_pipeline.core.claims import BULK_PRIORITY, LANE_TAG, PRIORITY_TAG, lane, reconcile
from imago_pipeline.core.reprocessing import stale_groups
from imago_pipeline.dagster_internals import claim_alive
from imago_pipeline.defs.enrichment.assets import process_images_job
from imago_pipeline.defs.reprocessing.planning import current_code_versions, plan_reprocessing
from imago_pipeline.defs.resources import CatalogResource, SettingsResource

MAX_RUNS_PER_TICK = 20


@dg.sensor(minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.RUNNING)
def stranded_images_sensor(context: dg.SensorEvaluationContext, catalog: CatalogResource,
                           settings: SettingsResource) -> dg.SkipReason:
    """Images taken into work whose run ended without finishing them (a killed run worker, a crash of the
    whole service, a run request that never became a run) go back to the queue with only their unfinished
    stages; each time counts one attempt, and past the retry limit the image is dead-lettered."""
    config = settings.get()
    plan = reconcile(catalog.get(), lambda claim: claim_alive(context.instance, claim),
                     max_retries=config.reprocess_max_retries, grace_s=config.claim_grace_s)
    if plan.images:
        context.log.warning(f"{len(plan.requeued)} stranded images requeued, {len(plan.dead_lettered)} "
                            "dead-lettered (their retries ran out)")
    return dg.SkipReason(f"{len(plan.requeued)} stranded images requeued, {len(plan.dead_lettered)} dead-lettered; "
                         f"{plan.alive_claims} claims in progress")


@dg.sensor(job=process_images_job, minimum_interval_seconds=300, default_status=dg.DefaultSensorStatus.STOPPED)
def stale_reprocess_sensor(context: dg.SensorEvaluationContext, catalog: CatalogResource,
                           settings: SettingsResource) -> dg.SensorResult | dg.SkipReason:
    """Redo stale stages in ranged batches: results made by an older code version (logic, Tesseract and
    languages, vision model or prompt) or missing, plus what depends on them. Off by default; turn it on
    after a deploy that changes a version, or use `imago reprocess --stale`."""
    return _stale_runs(context, catalog, settings, only=None)


@dg.sensor(job=process_images_job, minimum_interval_seconds=30, default_status=dg.DefaultSensorStatus.RUNNING)
def reclassify_sensor(context: dg.SensorEvaluationContext, catalog: CatalogResource,
                      settings: SettingsResource) -> dg.SensorResult | dg.SkipReason:
    """After a model promotion, redo the classifications made by the previous model (and what depends on
    them: vision, image_summary), in ranged batches."""
    return _stale_runs(context, catalog, settings, only=("classification",))


def _stale_runs(context, catalog: CatalogResource, settings: SettingsResource, only):
    config = settings.get()
    current = current_code_versions(config, catalog.get())  # once per tick: it reads the registry
    groups = stale_groups(catalog.get(), current, **({"only": only} if only else {}))
    if not groups:
        return dg.SkipReason("no stale images")
    planned = plan_reprocessing(groups, context.instance, config.batch_size)[:MAX_RUNS_PER_TICK]
    versions = hashlib.sha256(repr(sorted(current.items())).encode()).hexdigest()[:12]
    return dg.SensorResult(run_requests=[
        dg.RunRequest(run_key=f"reprocess-{'+'.join(p.stages)}-{p.batch.run_key}-{versions}",
                      asset_selection=[dg.AssetKey(stage) for stage in p.stages],
                      partition_key=p.batch.partition_key,
                      tags={**p.batch.tags, **BULK_TAGS, "imago/reprocess": "stale"})
        for p in planned])


# Bulk work, as the nightly batch's runs are: below every upload, one run slot at most, niced (docs/latency.md).
BULK_TAGS = {LANE_TAG: lane(BULK_PRIORITY), PRIORITY_TAG: str(BULK_PRIORITY)}
