"""The ways into the pipeline: uploads (and reprocessing requests) become runs; bulk drops become uploads.

`upload_sensor` is the single way into the pipeline: it takes `pending` (new) and `requeued` (reprocess)
images into work in one catalog transaction, adds them as `images` partitions and asks for one ranged run
per batch, so bulk uploads pay Dagster's per-run overhead once per batch, not once per image. Each run
carries the claim token of its images. The drop sensors only register files (a local folder, an S3
prefix: one `DropSource` each); the upload sensor does the rest.
"""

from datetime import UTC, datetime, timedelta

import dagster as dg

from imago_pipeline.core.claims import (
    BULK_PRIORITY,
    CLAIM_TAG,
    LANE_TAG,
    PRIORITY_TAG,
    lane,
    retry_batch_size,
    run_claim,
)
from imago_pipeline.core.ingest import ingest_drops
from imago_pipeline.core.stores.drops import DropSource, FolderDrop, S3Drop
from imago_pipeline.defs.batching import plan_claimed_ranges
from imago_pipeline.defs.enrichment.assets import image_partitions, process_images_job
from imago_pipeline.defs.resources import BlobStoreResource, CatalogResource, SettingsResource

MAX_RUNS_PER_TICK = 20
DROP_LIMIT = 500  # items registered per tick
# A run is `NOT_STARTED` for a moment between its creation and the queue; one still so after this was not
# launched (a retry Dagster could not plan) and is left to run monitoring, without holding up new uploads.
NEVER_STARTING = timedelta(seconds=60)


@dg.sensor(job=process_images_job, minimum_interval_seconds=1, default_status=dg.DefaultSensorStatus.RUNNING)
def upload_sensor(context: dg.SensorEvaluationContext, catalog: CatalogResource,
                  settings: SettingsResource) -> dg.SensorResult | dg.SkipReason:
    """New uploads (`pending`) and reprocessing requests (`requeued`) -> taken into work in one transaction,
    higher priorities first -> `images` partitions -> one ranged run per batch of `batch_size` images and
    lane, each with its claim token, its lane and its priority (the run queue starts higher ones first and
    keeps a run slot free of bulk work)."""
    # back-pressure, per lane: while a lane's runs wait for a slot, its new images gather into fuller batches
    # (two counts, not the runs themselves: this runs every second)
    waiting = dict(job_name=process_images_job.name,
                   statuses=[dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.QUEUED])
    interactive = context.instance.get_runs_count(dg.RunsFilter(**waiting, tags={LANE_TAG: "interactive"}))
    if interactive:  # but a run `NOT_STARTED` for long never will start (its launch failed): not waited for
        interactive -= context.instance.get_runs_count(dg.RunsFilter(
            job_name=process_images_job.name, statuses=[dg.DagsterRunStatus.NOT_STARTED],
            tags={LANE_TAG: "interactive"}, created_before=datetime.now(UTC) - NEVER_STARTING))
    if interactive:
        return dg.SkipReason(f"{interactive} process_images runs are waiting to start; new images wait for them")
    waiting_lanes = {"bulk"} if context.instance.get_runs_count(dg.RunsFilter(**waiting)) else set()
    cat = catalog.get()
    taken_as = run_claim()
    taken = cat.work.take(settings.get().batch_size * MAX_RUNS_PER_TICK, taken_as,
                          min_priority=BULK_PRIORITY + 1 if "bulk" in waiting_lanes else None)
    if not taken:
        return dg.SkipReason("no pending uploads and no reprocessing requests" + (
            " (bulk work waits for the bulk runs already queued)" if waiting_lanes else ""))
    requeued = {image_id for image_id, status, _, _ in taken if status == "requeued"}
    attempts = {i: image.attempts or 0 for i, image in cat.work.images_by_id(list(requeued)).items()
                } if requeued else {}  # new uploads alone (the latency path): no extra query
    # by priority, then by the batch size the images' retries allow (`retry_batch_size`)
    groups: dict[tuple[int, int], list[tuple[int, tuple[str, ...] | None]]] = {}
    for image_id, _, stages, priority in taken:
        size = retry_batch_size(settings.get().batch_size, attempts.get(image_id, 0))
        groups.setdefault((priority, size), []).append((image_id, stages))
    requests, claims, new_keys = [], {}, []
    for (priority, size), images in sorted(groups.items(), key=lambda group: (-group[0][0], -group[0][1])):
        planned, fresh = plan_claimed_ranges(context.instance, image_partitions.name, images, size)
        new_keys += fresh
        for stages, batch in planned:
            claim = run_claim()
            claims[claim] = [int(key) for key in batch.keys]
            tags = {**batch.tags, CLAIM_TAG: claim, LANE_TAG: lane(priority), PRIORITY_TAG: str(priority)}
            if requeued & set(claims[claim]):
                tags["imago/reprocess"] = "requested"
            requests.append(dg.RunRequest(run_key=claim, tags=tags, partition_key=batch.partition_key,
                                          asset_selection=[dg.AssetKey(s) for s in stages] if stages else None))
    cat.work.assign_claims(taken_as, claims)
    context.log.info(f"{len(taken) - len(requeued)} new and {len(requeued)} requeued images in {len(requests)} "
                     f"runs (priorities {sorted({p for p, _ in groups}, reverse=True)})")
    return dg.SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=[image_partitions.build_add_request(new_keys)] if new_keys else [],
    )


def _ingest(source: DropSource | None, why_not: str, catalog: CatalogResource, blobs: BlobStoreResource,
            settings: SettingsResource) -> dg.SkipReason:
    if source is None:
        return dg.SkipReason(why_not)
    report = ingest_drops(source, catalog.get(), blobs.get(), settings.get(), limit=DROP_LIMIT)
    if not report.registered + report.rejected:
        return dg.SkipReason(source.nothing_new)
    return dg.SkipReason(f"registered {report.registered} {source.items}, rejected {report.rejected}; "
                         "upload_sensor launches the runs")


@dg.sensor(minimum_interval_seconds=5, default_status=dg.DefaultSensorStatus.RUNNING)
def drop_folder_sensor(context: dg.SensorEvaluationContext, catalog: CatalogResource,
                       blobs: BlobStoreResource, settings: SettingsResource) -> dg.SkipReason:
    """Register files copied into the drop folder (`IMAGO_DROP_DIR`) for the default tenant.

    A file is taken once it has not changed for a couple of seconds (so a half-copied file is not read),
    then moved to `.imported/` or, when it is not an acceptable image, to `.rejected/` with the reason
    next to it. Registered images reach the pipeline through `upload_sensor`.
    """
    root = settings.get().drop_root
    return _ingest(FolderDrop(root) if root.is_dir() else None, f"drop folder {root} does not exist",
                   catalog, blobs, settings)


@dg.sensor(minimum_interval_seconds=10, default_status=dg.DefaultSensorStatus.RUNNING)
def s3_drop_sensor(context: dg.SensorEvaluationContext, catalog: CatalogResource,
                   blobs: BlobStoreResource, settings: SettingsResource) -> dg.SkipReason:
    """Register objects put under `IMAGO_S3_DROP_URI` (s3://bucket/prefix/) for the default tenant: bulk drops.

    An S3 object is visible only once completely written, so there is no settle time. Each object is moved
    under `<prefix>.imported/<day>/` or, when it is not an acceptable image, `<prefix>.rejected/<day>/` with a
    `.reason.txt` object next to it. Registered images reach the pipeline through `upload_sensor`.
    """
    uri = settings.get().s3_drop_uri
    return _ingest(S3Drop(blobs.s3(), uri) if uri else None, "no S3 drop prefix configured (IMAGO_S3_DROP_URI)",
                   catalog, blobs, settings)


RETIRE_PER_TICK = 5000


@dg.sensor(minimum_interval_seconds=600, default_status=dg.DefaultSensorStatus.RUNNING)
def partition_window_sensor(context: dg.SensorEvaluationContext, catalog: CatalogResource,
                            settings: SettingsResource) -> dg.SensorResult | dg.SkipReason:
    """Keep the `images` partitions to a window: images finished and unchanged for `partition_window_days`
    leave the partition set, so what every ranged run pays for the partition list (Dagster reads it whole,
    27 times a run) follows the images of the last days, not every image ever ingested. Their history stays:
    materializations in the event log, results in the catalog and the lake; reprocessing one adds it back."""
    window = settings.get().partition_window_days
    if not window:
        return dg.SkipReason("IMAGO_PARTITION_WINDOW_DAYS=0: every image keeps its partition")
    keys = context.instance.get_dynamic_partitions(image_partitions.name)
    cutoff = datetime.now(UTC) - timedelta(days=window)
    settled = catalog.get().work.settled_before((int(k) for k in keys if k.isdigit()), cutoff)[:RETIRE_PER_TICK]
    if not settled:
        return dg.SkipReason(f"{len(keys)} partitions, none settled for {window:g} days")
    context.log.info(f"{len(settled)} of {len(keys)} image partitions retired (settled for {window:g} days)")
    return dg.SensorResult(dynamic_partitions_requests=[
        image_partitions.build_delete_request([str(i) for i in settled])])
