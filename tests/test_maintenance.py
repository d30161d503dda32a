"""Retention purges and the nightly batch reprocessing, on SQLite and Postgres."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import dagster as dg
import duckdb
import pytest
from sqlalchemy import select, update

from imago_pipeline.core.analytics import open_analytics
from imago_pipeline.core.catalog import StageOutcome
from imago_pipeline.core.catalog.models import AuditEvent, Feedback, Image, ImageStage, InferenceLog
from imago_pipeline.core.ingest import register_image
from imago_pipeline.core.retention import purge_expired
from imago_pipeline.core.stores.blobs import LocalBlobStore
from imago_pipeline.core.stores.lake import Lake
from imago_pipeline.definitions import build_definitions
from imago_pipeline.defs.intake.sensors import upload_sensor
from imago_pipeline.defs.resources import build_resources
from imago_pipeline.in_process import process_images
from tests.conftest import REPO, SAMPLES

NOW = datetime.now(UTC)
# age in days -> expired? (inference logs are kept 180 days, feedback 365)
LOG_AGES = {200: True, 181: True, 179: False, 0: False}
FEEDBACK_AGES = {400: True, 366: True, 364: False, 1: False}


def _register(catalog, settings, names, tenant="t"):
    tenant_row = catalog.clients.get_or_create(tenant)
    store = LocalBlobStore(settings.blob_root)
    return tenant_row, [register_image(catalog, store, settings, tenant_id=tenant_row.id, filename=n,
                                       data=(SAMPLES / n).read_bytes(), status="queued").image.id for n in names]


def _seed_old_rows(catalog, settings):
    tenant, (image_id,) = _register(catalog, settings, ["Canon_40D.jpg"])
    with catalog.session() as session:
        for age in LOG_AGES:
            session.add(InferenceLog(tenant_id=tenant.id, success=True, latency_ms=10.0 + age, model_version="v1",
                                     label="cat", created_at=NOW - timedelta(days=age, minutes=1)))
        for age in FEEDBACK_AGES:
            session.add(Feedback(tenant_id=tenant.id, image_id=image_id, correct=age % 2 == 0, label="cat",
                                 predicted_label="cat", model_version="v1",
                                 created_at=NOW - timedelta(days=age, minutes=1)))
        session.commit()


def _ages(catalog, model) -> set[int]:
    with catalog.session() as session:
        return {(NOW - row.created_at).days for row in session.scalars(select(model))}


def _lake_ages(settings, table) -> set[int]:
    rows = duckdb.sql(f"SELECT created_at FROM read_parquet('{settings.lake_root}/{table}/**/*.parquet')").fetchall()
    return {(NOW - created).days for (created,) in rows}


def test_retention_purges_exactly_the_expired_rows_everywhere_and_is_idempotent(catalog, settings,
                                                                                 dagster_instance):
    _seed_old_rows(catalog, settings)
    defs = build_definitions(settings)
    assert dg.materialize([defs.get_assets_def("classifier_monitoring")], instance=dagster_instance,
                          resources=defs.resources).success
    assert _lake_ages(settings, "inference_log") == set(LOG_AGES)
    assert _lake_ages(settings, "feedback") == set(FEEDBACK_AGES)

    preview = purge_expired(catalog, Lake(settings.lake_root), {"inference_log": 180, "feedback": 365},
                            dry_run=True)
    assert [(r.table, r.catalog_rows, r.lake_rows) for r in preview] == [("inference_log", 2, 2), ("feedback", 2, 2)]
    assert _ages(catalog, InferenceLog) == set(LOG_AGES)  # a dry run changes nothing
    with catalog.session() as session:
        assert session.scalars(select(AuditEvent)).all() == []

    job = defs.resolve_job_def("retention_job")
    result = job.execute_in_process(instance=dagster_instance)
    assert result.success
    ran = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()
           for e in [e.event_specific_data.materialization]}
    assert {"retention_purge", "classifier_monitoring"} <= ran  # and every SQL model built on them
    assert "orphan_blob_sweep" in ran  # the same daily run sweeps the stored files (tests/test_orphan_blobs.py)

    kept_logs = {a for a, expired in LOG_AGES.items() if not expired}
    kept_feedback = {a for a, expired in FEEDBACK_AGES.items() if not expired}
    assert _ages(catalog, InferenceLog) == kept_logs and _ages(catalog, Feedback) == kept_feedback
    assert _lake_ages(settings, "inference_log") == kept_logs
    assert _lake_ages(settings, "feedback") == kept_feedback
    metadata = result.asset_materializations_for_node("classifier_monitoring")[0].metadata
    assert metadata["inferences"].value == 2 and metadata["feedback"].value == 2
    # the SQL models built on those tables were rebuilt in the same run: only the kept rows count
    assert {"analytics/feedback_agreement", "analytics/inference_latency"} <= ran
    con = open_analytics(settings.lake_root)
    try:
        assert con.sql("SELECT feedback, agreed FROM feedback_agreement WHERE model_version = 'v1'").fetchall() == [
            (2, sum(1 for age, expired in FEEDBACK_AGES.items() if not expired and age % 2 == 0))]
        assert con.sql("SELECT requests FROM inference_latency WHERE model_version = 'v1'").fetchall() == [(2,)]
    finally:
        con.close()
    with catalog.session() as session:
        audit = [(a.action, a.detail["catalog_rows"], a.detail["lake_rows"], a.detail["retention_days"])
                 for a in session.scalars(select(AuditEvent).order_by(AuditEvent.id))]
    assert audit == [("purge_inference_log", 2, 2, 180), ("purge_feedback", 2, 2, 365)]

    again = job.execute_in_process(instance=dagster_instance)
    assert again.success
    assert _ages(catalog, InferenceLog) == kept_logs and _lake_ages(settings, "feedback") == kept_feedback
    with catalog.session() as session:
        events = session.scalars(select(AuditEvent).order_by(AuditEvent.id))
        audit = [(a.action, a.detail["catalog_rows"]) for a in events]
    assert audit[2:] == [("purge_inference_log", 0), ("purge_feedback", 0)]


# A purge killed (SIGKILL) between the catalog's deletion and the lake's: at its first lake deletion.
PURGE_AND_DIE = """
import os, signal, sys
from imago_pipeline.core.catalog import Catalog
from imago_pipeline.core.retention import purge_expired
from imago_pipeline.core.stores.lake import Lake

class DiesInTheLake(Lake):
    def delete_before(self, *args, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)

purge_expired(Catalog.connect(sys.argv[1]), DiesInTheLake(sys.argv[2]), {"inference_log": 180, "feedback": 365})
"""


def test_a_purge_killed_half_way_is_on_record_and_the_next_one_finishes_the_lake(catalog, settings,
                                                                                   dagster_instance):
    """Before: the audit row was written after both stores, so a purge killed in between had deleted catalog
    rows with no record of it, and the next run recorded 0 catalog rows."""
    _seed_old_rows(catalog, settings)
    defs = build_definitions(settings)
    assert dg.materialize([defs.get_assets_def("classifier_monitoring")], instance=dagster_instance,
                          resources=defs.resources).success
    killed = subprocess.run([sys.executable, "-c", PURGE_AND_DIE, settings.catalog_url, str(settings.lake_root)],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert killed.returncode == -9, killed.stderr

    def audit():
        with catalog.session() as session:
            return [(a.action, a.detail["catalog_rows"], a.detail["lake_rows"])
                    for a in session.scalars(select(AuditEvent).order_by(AuditEvent.id))]

    assert audit() == [("purge_inference_log", 2, None)]  # the lake's count never came: it never ran
    assert _ages(catalog, InferenceLog) == {a for a, expired in LOG_AGES.items() if not expired}
    assert _lake_ages(settings, "inference_log") == set(LOG_AGES)
    purge_expired(catalog, Lake(settings.lake_root), {"inference_log": 180, "feedback": 365})
    assert audit()[1:] == [("purge_inference_log", 0, 2), ("purge_feedback", 2, 2)]
    assert _lake_ages(settings, "inference_log") == {a for a, expired in LOG_AGES.items() if not expired}


def test_retention_periods_are_configurable_and_the_cli_dry_run_shows_them(catalog, settings):
    _seed_old_rows(catalog, settings)
    env = {**os.environ, "IMAGO_HOME": str(settings.resolved_home), "IMAGO_DATABASE_URL": settings.catalog_url,
           "IMAGO_INFERENCE_LOG_RETENTION_DAYS": "30", "IMAGO_FEEDBACK_RETENTION_DAYS": "380"}
    env.pop("DAGSTER_HOME", None)
    shown = subprocess.run([sys.executable, "-m", "imago_pipeline", "purge", "--dry-run"], env=env, cwd=REPO,
                           capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert "inference_log: 3 catalog rows and 0 lake rows older than 30 days" in shown.stdout
    assert "feedback: 1 catalog rows and 0 lake rows older than 380 days" in shown.stdout
    assert "stored files: 0 of 1 (0 bytes) are a day old and no row points at them" in shown.stdout
    assert _ages(catalog, InferenceLog) == set(LOG_AGES)


def test_schedules_are_daily_and_nightly_and_on_by_default():
    defs = build_definitions()
    automation = defs.resolve_sensor_def("sql_models_automation")
    targets = {k.to_user_string() for k in automation.asset_selection.resolve(defs.resolve_asset_graph())}
    # the monitoring snapshot's 15 minutes run under a sensor that is on by default, with the models
    assert "classifier_monitoring" in targets and "analytics/feedback_agreement" in targets
    assert automation.default_status == dg.DefaultSensorStatus.RUNNING
    retention = defs.resolve_schedule_def("retention_schedule")
    nightly = defs.resolve_schedule_def("nightly_reprocess_schedule")
    assert (retention.cron_schedule, retention.job_name) == ("30 3 * * *", "retention_job")
    assert (nightly.cron_schedule, nightly.job_name) == ("0 2 * * *", "batch_reprocess_job")
    assert {retention.default_status, nightly.default_status} == {dg.DefaultScheduleStatus.RUNNING}


def _run_requested(settings, instance, result):
    """Run what the upload sensor asked for, in this process (the daemon would launch them)."""
    job = build_definitions(settings).resolve_job_def("process_images")
    for request in result.run_requests:
        outcome = job.execute_in_process(instance=instance, tags=request.tags, partition_key=request.partition_key,
                                         asset_selection=request.asset_selection, raise_on_error=False)
        assert outcome.success


def _fail(catalog, image_id, tenant_id, stage="ocr", error="TesseractError: boom"):
    catalog.results.save_stage(stage, [StageOutcome(image_id, tenant_id, "failed", error)])
    catalog.work.finish([image_id], ["exif", "thumbnail", "ocr", "embedding", "classification", "vision"])


@pytest.mark.slow
def test_nightly_batch_requeues_stale_and_failed_oldest_first_with_retries_then_dead_letters(
        catalog, settings, dagster_instance):
    tenant, ids = _register(catalog, settings,
                            ["Canon_40D.jpg", "Nikon_D70.jpg", "phototest.tif", "PaintTool_sample.jpg"])
    process_images(ids, settings=settings, instance=dagster_instance)
    failed_id, stale_id, other_id, dead_id = ids
    _fail(catalog, failed_id, tenant.id)
    _fail(catalog, dead_id, tenant.id, stage="thumbnail", error="decoder error")
    with catalog.session() as session:
        session.execute(update(ImageStage).where(ImageStage.image_id == stale_id, ImageStage.stage == "exif")
                        .values(code_version="exif-v0"))
        session.execute(update(Image).where(Image.id == dead_id).values(attempts=3))
        session.commit()
    defs = build_definitions(settings)
    job = defs.resolve_job_def("batch_reprocess_job")

    def run(**config):
        result = job.execute_in_process(instance=dagster_instance, run_config={
            "ops": {"requeue_stale_and_failed": {"config": config}}})
        assert result.success
        return result.output_for_node("requeue_stale_and_failed")

    # filters: a stage nothing is wrong with, another tenant, an unknown tenant; dry runs change nothing
    only_classification = run(stages=["classification"], dry_run=True)
    assert (only_classification["stale_requeued"], only_classification["failed_retried"]) == (0, 0)
    only_ocr = run(stages=["ocr"], dry_run=True)
    assert (only_ocr["stale_requeued"], only_ocr["failed_retried"]) == (0, 1)
    catalog.clients.get_or_create("other")
    other = run(tenant="other", dry_run=True)
    assert (other["stale_requeued"], other["failed_retried"], other["dead_lettered"]) == (0, 0, 0)
    unknown = job.execute_in_process(instance=dagster_instance, raise_on_error=False, run_config={
        "ops": {"requeue_stale_and_failed": {"config": {"tenant": "nobody"}}}})
    assert not unknown.success
    budget_one = run(budget=1, dry_run=True)
    assert (budget_one["failed_retried"], budget_one["stale_requeued"], budget_one["deferred_past_budget"]) == (1, 0, 1)

    summary = run()
    assert summary | {"budget": None} == {"stranded_requeued": 0, "stale_requeued": 1, "failed_retried": 1,
                                          "dead_lettered": 1,
                                          "retry_not_due": 0, "deferred_past_budget": 0, "budget": None,
                                          "dry_run": False}
    images = catalog.work.images_by_id(ids)
    assert images[failed_id].status == "requeued" and images[failed_id].attempts == 1
    assert images[failed_id].requeue_stages == ["image_summary", "ocr", "vision"]
    backoff = images[failed_id].next_attempt_at - datetime.now(UTC)
    assert timedelta(hours=5.9) < backoff <= timedelta(hours=6)
    assert images[stale_id].status == "requeued" and "exif" in images[stale_id].requeue_stages
    assert images[other_id].status == "done"
    assert images[dead_id].status == "failed" and images[dead_id].gave_up_at is not None
    assert images[dead_id].error == "thumbnail: decoder error"  # the reason stays

    # the upload sensor turns the requests into runs of just those stages; the images come back done
    with dg.build_sensor_context(instance=dagster_instance, resources=build_resources(settings)) as context:
        tick = upload_sensor(context)
    selections = {tuple(sorted(k.to_user_string() for k in r.asset_selection)) for r in tick.run_requests}
    assert selections == {("image_summary", "ocr", "vision"), tuple(images[stale_id].requeue_stages)}
    assert images[stale_id].requeue_stages == ["exif", "image_summary", "vision"]
    _run_requested(settings, dagster_instance, tick)
    images = catalog.work.images_by_id(ids)
    assert images[failed_id].status == "done" and images[stale_id].status == "done"
    # the retry succeeded: its count and back-off end with it (they kept counting: an unrelated failure
    # months later was dead-lettered without a retry)
    assert (images[failed_id].attempts, images[failed_id].next_attempt_at) == (0, None)
    assert run()["stale_requeued"] == 0  # nothing stale any more

    # a failure that keeps failing: retried until the limit, waiting between tries, then dead-lettered
    _fail(catalog, failed_id, tenant.id)
    assert run()["failed_retried"] == 1  # a new failure: retried at once, its first attempt
    _fail(catalog, failed_id, tenant.id)
    assert run()["retry_not_due"] == 1  # the back-off from that retry runs
    with catalog.session() as session:
        session.execute(update(Image).where(Image.id == failed_id).values(next_attempt_at=None, attempts=3))
        session.commit()
    assert run()["dead_lettered"] == 1
    scoped = catalog.for_tenant(tenant.id)
    from imago_pipeline.core.catalog import ImageFilters

    dead, total = scoped.list_images(ImageFilters(dead_letter=True), limit=10, offset=0)
    assert total == 2 and {i.id for i in dead} == {failed_id, dead_id}
    # a person asking again starts over
    assert scoped.request_reprocess(dead_id).gave_up_at is None


@pytest.mark.slow
def test_the_cli_retries_failed_images_reports_what_failed_again_and_dead_letters_them(catalog, settings,
                                                                                       dagster_instance):
    tenant, (spent, broken) = _register(catalog, settings, ["Canon_40D.jpg", "Nikon_D70.jpg"])
    process_images([spent, broken], settings=settings, instance=dagster_instance)
    _fail(catalog, spent, tenant.id)
    _fail(catalog, broken, tenant.id)
    with catalog.session() as session:  # one has spent its retries; the other's file is gone: it fails again
        session.execute(update(Image).where(Image.id == spent).values(attempts=3))
        session.commit()
    LocalBlobStore(settings.blob_root).delete(catalog.work.images_by_id([broken])[broken].blob_key)
    env = {**os.environ, "IMAGO_HOME": str(settings.resolved_home), "IMAGO_DATABASE_URL": settings.catalog_url,
           "IMAGO_REPROCESS_BACKOFF_S": "0"}
    env.pop("DAGSTER_HOME", None)

    def reprocess(*flags):
        return subprocess.run([sys.executable, "-m", "imago_pipeline", "reprocess", "--failed", *flags], env=env,
                              cwd=REPO, capture_output=True, text=True, timeout=300)

    shown = reprocess("--dry-run")
    assert shown.returncode == 0, shown.stderr
    assert "1 images: " in shown.stdout and "1 failed images would be dead-lettered" in shown.stdout
    assert catalog.work.images_by_id([spent])[spent].gave_up_at is None  # a dry run changes nothing
    for attempt in (1, 2, 3):  # each retry fails again: said, and the exit status says so
        done = reprocess()
        assert done.returncode == 1, done.stdout + done.stderr
        assert "1 images reprocessed in 1 Dagster runs: 0 done, 1 failed; 0 runs failed" in done.stdout
        assert catalog.work.images_by_id([spent])[spent].gave_up_at is not None  # dead-lettered by the first
        assert catalog.work.images_by_id([broken])[broken].attempts == attempt
    last = reprocess()
    assert last.returncode == 0, last.stderr
    assert f"1 failed images are dead-lettered, their 3 retries spent: {broken}" in last.stdout
    assert catalog.work.images_by_id([broken])[broken].gave_up_at is not None
    assert "nothing to redo" in reprocess().stdout
