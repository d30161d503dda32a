"""Sensors that turn new uploads into batched runs, and make sure every image taken into work is finished.

`upload_sensor` is the single way into the pipeline: it takes `pending` (new) and `requeued` (reprocess)
images into work in one catalog transaction, adds them as `images` partitions and asks for one ranged run
per batch, so bulk uploads pay Dagster's per-run overhead once per batch, not once per image. Each run
carries the claim token of its images. `stranded_images_sensor` requeues images whose run or process is
gone. The drop-folder sensors only register files in the catalog; the upload sensor does the rest.
"""


import hashlib
import shutil
import time
from datetime import datetime, timezone
from pathlib import Path

import dagster as dg

from imago_pipeline.defs.batching import plan_claimed_batches
from imago_pipeline.core.claims import CLAIM_TAG, reconcile, run_claim
from imago_pipeline.dagster_internals import claim_alive
from imago_pipeline.defs.enrichment.assets import image_partitions, process_images_job
from imago_pipeline.defs.resources import BlobStoreResource, CatalogResource, MaintenanceResource, SettingsResource
from imago_pipeline.core.enrichment.decode import InvalidImage
from imago_pipeline.core.ingest import register_image

MAX_RUNS_PER_TICK = 20


@dg.sensor(job=process_images_job, minimum_interval_seconds=2, default_status=dg.DefaultSensorStatus.RUNNING)
def upload_sensor(context: dg.SensorEvaluationContext, catalog: CatalogResource,
                  settings: SettingsResource) -> dg.SensorResult | dg.SkipReason:
    """New uploads (`pending`) and reprocessing requests (`requeued`) -> taken into work in one transaction
    -> `images` partitions -> one ranged run per batch of `batch_size` images, each with its claim token."""
    waiting = context.instance.get_runs_count(dg.RunsFilter(
        job_name=process_images_job.name, statuses=[dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.QUEUED]))
    if waiting:  # back-pressure: while runs wait for a slot, new images gather into fuller batches
        return dg.SkipReason(f"{waiting} process_images runs are waiting to start; new images wait for them")
    cat = catalog.get()
    taken_as = run_claim()
    taken = cat.take_work(settings.batch_size * MAX_RUNS_PER_TICK, taken_as)
    if not taken:
        return dg.SkipReason("no pending uploads and no reprocessing requests")
    requeued = {image_id for image_id, status, _ in taken if status == "requeued"}
    planned, new_keys = plan_claimed_batches(context.instance, image_partitions.name,
                                             [(image_id, stages) for image_id, _, stages in taken],
                                             settings.batch_size)
    requests, claims = [], {}
    for stages, batch in planned:
        claim = run_claim()
        claims[claim] = [int(key) for key in batch.keys]
        tags = {**batch.tags, CLAIM_TAG: claim}
        if requeued & set(claims[claim]):
            tags["imago/reprocess"] = "requested"
        requests.append(dg.RunRequest(run_key=claim, tags=tags, partition_key=batch.partition_key,
                                      asset_selection=[dg.AssetKey(s) for s in stages] if stages else None))
    cat.assign_claims(taken_as, claims)
    context.log.info(f"{len(taken) - len(requeued)} new and {len(requeued)} requeued images in {len(requests)} runs")
    return dg.SensorResult(
        run_requests=requests,
        dynamic_partitions_requests=[image_partitions.build_add_request(new_keys)] if new_keys else [],
    )


@dg.sensor(minimum_interval_seconds=60, default_status=dg.DefaultSensorStatus.RUNNING)
def stranded_images_sensor(context: dg.SensorEvaluationContext, catalog: CatalogResource,
                           maintenance: MaintenanceResource) -> dg.SkipReason:
    """Images taken into work whose run ended without finishing them (a killed run worker, a crash of the
    whole service, a run request that never became a run) go back to the queue with only their unfinished
    stages; each time counts one attempt, and past the retry limit the image is dead-lettered."""
    plan = reconcile(catalog.get(), lambda claim: claim_alive(context.instance, claim),
                     max_retries=maintenance.reprocess_max_retries, grace_s=maintenance.claim_grace_s)
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
    from imago_pipeline.core.reprocessing import current_code_versions, plan_reprocessing, stale_groups

    graph = context.repository_def.asset_graph
    current = current_code_versions(graph, catalog.get())  # once per tick: it reads the registry
    kwargs = {"only": only} if only else {}
    groups = stale_groups(catalog.get(), graph, current=current, **kwargs)
    if not groups:
        return dg.SkipReason("no stale images")
    planned = plan_reprocessing(groups, context.instance, settings.batch_size)[:MAX_RUNS_PER_TICK]
    versions = hashlib.sha256(repr(sorted(current.items())).encode()).hexdigest()[:12]
    return dg.SensorResult(run_requests=[
        dg.RunRequest(run_key=f"reprocess-{'+'.join(p.stages)}-{p.batch.run_key}-{versions}",
                      asset_selection=[dg.AssetKey(stage) for stage in p.stages],
                      partition_key=p.batch.partition_key, tags={**p.batch.tags, "imago/reprocess": "stale"})
        for p in planned])


SETTLE_SECONDS = 2.0


@dg.sensor(minimum_interval_seconds=5, default_status=dg.DefaultSensorStatus.RUNNING)
def drop_folder_sensor(context: dg.SensorEvaluationContext, catalog: CatalogResource,
                       blobs: BlobStoreResource, settings: SettingsResource) -> dg.SkipReason:
    """Register files copied into the drop folder (`IMAGO_DROP_DIR`) for the default tenant.

    A file is taken once it has not changed for a couple of seconds (so a half-copied file is not read),
    then moved to `.imported/` or, when it is not an acceptable image, to `.rejected/` with the reason
    next to it. Registered images reach the pipeline through `upload_sensor`.
    """
    imago_settings = settings.imago_settings()
    drop = imago_settings.drop_root
    if not drop.is_dir():
        return dg.SkipReason(f"drop folder {drop} does not exist")
    now = time.time()
    candidates = sorted(p for p in drop.rglob("*") if p.is_file() and not _hidden(p, drop)
                        and now - p.stat().st_mtime >= SETTLE_SECONDS)
    if not candidates:
        return dg.SkipReason("no settled files in the drop folder")
    cat = catalog.get()
    tenant = cat.get_or_create_tenant(imago_settings.default_tenant)
    store = blobs.get()
    registered = rejected = 0
    for path in candidates[:500]:
        try:
            register_image(cat, store, imago_settings, tenant_id=tenant.id, filename=path.name, data=path.read_bytes())
            _move(path, drop, ".imported")
            registered += 1
        except InvalidImage as exc:
            target = _move(path, drop, ".rejected")
            target.with_name(target.name + ".reason.txt").write_text(str(exc) + "\n")
            rejected += 1
    return dg.SkipReason(f"registered {registered} files, rejected {rejected}; upload_sensor launches the runs")


@dg.sensor(minimum_interval_seconds=10, default_status=dg.DefaultSensorStatus.RUNNING)
def s3_drop_sensor(context: dg.SensorEvaluationContext, catalog: CatalogResource,
                   blobs: BlobStoreResource, settings: SettingsResource) -> dg.SkipReason:
    """Register objects put under `IMAGO_S3_DROP_URI` (s3://bucket/prefix/) for the default tenant: bulk drops.

    An S3 object is visible only once completely written, so there is no settle time. Each object is moved
    under `<prefix>.imported/<day>/` or, when it is not an acceptable image, `<prefix>.rejected/<day>/` with a
    `.reason.txt` object next to it. Registered images reach the pipeline through `upload_sensor`.
    """
    from imago_pipeline.core.stores.blobs import iter_s3_objects

    if not settings.s3_drop_uri:
        return dg.SkipReason("no S3 drop prefix configured (IMAGO_S3_DROP_URI)")
    bucket, prefix = _parse_s3_uri(settings.s3_drop_uri)
    client = blobs.s3()
    objects = [o for o in iter_s3_objects(client, bucket, prefix)
               if not o["Key"].endswith("/") and not any(p.startswith(".") for p in o["Key"][len(prefix):].split("/"))]
    if not objects:
        return dg.SkipReason(f"nothing under s3://{bucket}/{prefix}")
    imago_settings = settings.imago_settings()
    cat = catalog.get()
    tenant = cat.get_or_create_tenant(imago_settings.default_tenant)
    store = blobs.get()
    day = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    registered = rejected = 0
    for obj in objects[:500]:
        key, name = obj["Key"], obj["Key"].rsplit("/", 1)[-1]
        relative = key[len(prefix):]
        try:
            if obj["Size"] > imago_settings.max_upload_bytes:  # refused without downloading it
                raise InvalidImage(f"{obj['Size']} bytes is over the limit of {imago_settings.max_upload_bytes} "
                                   "bytes", "too_large")
            data = client.get_object(Bucket=bucket, Key=key)["Body"].read()
            register_image(cat, store, imago_settings, tenant_id=tenant.id, filename=name, data=data)
            target = f"{prefix}.imported/{day}/{relative}"
            registered += 1
        except InvalidImage as exc:
            target = f"{prefix}.rejected/{day}/{relative}"
            client.put_object(Bucket=bucket, Key=target + ".reason.txt", Body=(str(exc) + "\n").encode())
            rejected += 1
        client.copy_object(Bucket=bucket, Key=target, CopySource={"Bucket": bucket, "Key": key})
        client.delete_object(Bucket=bucket, Key=key)
    return dg.SkipReason(f"registered {registered} objects, rejected {rejected}; upload_sensor launches the runs")


def _parse_s3_uri(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://"):
        raise ValueError(f"not an s3:// URI: {uri!r}")
    bucket, _, prefix = uri[5:].partition("/")
    return bucket, (prefix.rstrip("/") + "/") if prefix else ""


def _hidden(path: Path, root: Path) -> bool:
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def _move(path: Path, root: Path, folder: str) -> Path:
    day = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    target = root / folder / day / path.relative_to(root)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():
        target = target.with_name(f"{target.stem}-{int(time.time() * 1000)}{target.suffix}")
    shutil.move(str(path), target)
    return target
