"""Sensors evaluated with build_sensor_context on a real Dagster instance."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta

import dagster as dg
from sqlalchemy import text, update

from imago_pipeline.core.catalog.models import Image
from imago_pipeline.core.claims import CLAIM_TAG, LANE_TAG
from imago_pipeline.core.ingest import register_image
from imago_pipeline.core.stores.blobs import LocalBlobStore
from imago_pipeline.dagster_internals import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG
from imago_pipeline.defs.intake.sensors import drop_folder_sensor, partition_window_sensor, upload_sensor
from imago_pipeline.defs.resources import build_resources
from tests.conftest import SAMPLES, shared


def _sample_bytes() -> list[tuple[str, bytes]]:
    return [(p.name, p.read_bytes()) for p in sorted(SAMPLES.iterdir())
            if p.suffix in (".jpg", ".png", ".webp", ".tif")]


def _tick(sensor, instance, resources, cursor=None):
    with dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources) as context:
        result = sensor(context)
    if isinstance(result, dg.SensorResult):
        for request in result.dynamic_partitions_requests or []:
            instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    return result


def _uploads_in_batches_of_four(catalog, settings):
    """The samples uploaded (pending) by tenant `t`, and resources with batches of 4 images."""
    settings = settings.model_copy(update={"batch_size": 4})
    tenant = catalog.clients.get_or_create("t")
    store = LocalBlobStore(settings.blob_root)
    ids = [register_image(catalog, store, settings, tenant_id=tenant.id, filename=n, data=d).image.id
           for n, d in _sample_bytes()]
    return tenant, ids, build_resources(settings)


def _claims(catalog, ids):
    images = catalog.work.images_by_id(ids)
    return {i: (images[i].status, images[i].claim) for i in ids}


def test_upload_sensor_claims_uploads_and_asks_for_ranged_batches(catalog, settings, dagster_instance):
    _, ids, resources = _uploads_in_batches_of_four(catalog, settings)

    result = _tick(upload_sensor, dagster_instance, resources)

    assert isinstance(result, dg.SensorResult)
    assert dagster_instance.get_dynamic_partitions("images") == [str(i) for i in ids]
    ranges = [(r.tags[ASSET_PARTITION_RANGE_START_TAG], r.tags[ASSET_PARTITION_RANGE_END_TAG])
              for r in result.run_requests]
    expected = [(str(ids[i]), str(ids[min(i + 3, len(ids) - 1)])) for i in range(0, len(ids), 4)]
    assert ranges == expected
    assert len({r.run_key for r in result.run_requests}) == len(result.run_requests)
    # every image is taken into work under the claim its run carries, and only that run's
    claims = _claims(catalog, ids)
    for request in result.run_requests:
        start = int(request.tags[ASSET_PARTITION_RANGE_START_TAG])
        end = int(request.tags[ASSET_PARTITION_RANGE_END_TAG])
        assert {claims[i] for i in ids if start <= i <= end} == {("queued", request.tags[CLAIM_TAG])}

    idle = _tick(upload_sensor, dagster_instance, resources)
    assert isinstance(idle, dg.SkipReason) and "no pending uploads" in idle.skip_message


def test_an_upload_that_commits_after_a_newer_one_is_still_taken(catalog, settings, dagster_instance):
    """Work is found by status, not by "ids after the last one seen": a row that commits late (Postgres
    hands out ids before commit) or with a lower id is taken at the next tick."""
    _tenant, ids, resources = _uploads_in_batches_of_four(catalog, settings)
    _tick(upload_sensor, dagster_instance, resources)
    with catalog.session() as session:  # what a transaction that committed late looks like afterwards
        session.execute(text("UPDATE images SET status = 'pending', claim = NULL WHERE id = :id"), {"id": ids[1]})
        session.commit()

    late = _tick(upload_sensor, dagster_instance, resources)

    assert [r.partition_key for r in late.run_requests] == [str(ids[1])]
    assert _claims(catalog, [ids[1]])[ids[1]] == ("queued", late.run_requests[0].tags[CLAIM_TAG])


def test_reprocess_requests_become_ranged_runs_once_each(catalog, settings, dagster_instance):
    tenant, ids, resources = _uploads_in_batches_of_four(catalog, settings)
    _tick(upload_sensor, dagster_instance, resources)
    catalog.work.finish(ids, [])  # as if processed (no stage required)
    scoped = catalog.for_tenant(tenant.id)
    for image_id in ids[1:4] + ids[6:7]:  # ids[1..3] are consecutive partitions, ids[6] stands alone
        assert scoped.request_reprocess(image_id).status == "requeued"

    result = _tick(upload_sensor, dagster_instance, resources)

    assert isinstance(result, dg.SensorResult) and not result.dynamic_partitions_requests
    ranged = [(r.tags[ASSET_PARTITION_RANGE_START_TAG], r.tags[ASSET_PARTITION_RANGE_END_TAG])
              for r in result.run_requests if r.partition_key is None]
    single = [r.partition_key for r in result.run_requests if r.partition_key is not None]
    assert ranged == [(str(ids[1]), str(ids[3]))] and single == [str(ids[6])]
    assert all(r.tags["imago/reprocess"] == "requested" for r in result.run_requests)
    # The next tick does not ask again while they are in work...
    assert isinstance(_tick(upload_sensor, dagster_instance, resources), dg.SkipReason)
    # ...but a new request for one of them is a new run.
    scoped.request_reprocess(ids[2])
    again = _tick(upload_sensor, dagster_instance, resources)
    assert [r.partition_key for r in again.run_requests] == [str(ids[2])]
    assert again.run_requests[0].run_key not in {r.run_key for r in result.run_requests}


def test_upload_sensor_ignores_images_registered_for_in_process_runs(catalog, settings, dagster_instance):
    tenant = catalog.clients.get_or_create("t")
    name, data = _sample_bytes()[0]
    register_image(catalog, LocalBlobStore(settings.blob_root), settings, tenant_id=tenant.id, filename=name,
                   data=data, status="queued")
    assert isinstance(_tick(upload_sensor, dagster_instance, build_resources(settings)), dg.SkipReason)


def test_drop_folder_sensor_registers_settled_files_and_rejects_bad_ones(catalog, settings, dagster_instance):
    drop = settings.drop_root
    (drop / "album").mkdir(parents=True)
    good = drop / "album" / "canon.jpg"
    good.write_bytes((SAMPLES / "Canon_40D.jpg").read_bytes())
    bad = drop / "notes.jpg"
    bad.write_bytes(shared("bad", "pillow__truncated_jpeg.jpg").read_bytes())
    fresh = drop / "still-copying.jpg"
    fresh.write_bytes((SAMPLES / "Nikon_D70.jpg").read_bytes())
    old = time.time() - 60
    for path in (good, bad):
        os.utime(path, (old, old))

    result = _tick(drop_folder_sensor, dagster_instance, build_resources(settings))

    assert "registered 1 files, rejected 1" in result.skip_message
    assert fresh.exists()  # not settled yet: left alone for the next tick
    assert not good.exists() and not bad.exists()
    assert list(drop.glob(".imported/*/album/canon.jpg"))
    reasons = list(drop.glob(".rejected/*/notes.jpg.reason.txt"))
    assert reasons and "truncated" in reasons[0].read_text()
    tenant = catalog.clients.get_or_create(settings.default_tenant)
    ids = catalog.work.ids_with_status("pending")
    assert len(ids) == 1 and catalog.for_tenant(tenant.id).get_image(ids[0]).original_name == "canon.jpg"


def test_while_runs_wait_for_a_slot_new_uploads_wait_to_form_fuller_batches(catalog, settings, dagster_instance):
    from imago_pipeline.definitions import build_definitions

    _tenant, ids, resources = _uploads_in_batches_of_four(catalog, settings)
    job = build_definitions(settings).resolve_job_def("process_images")
    # made, not started: waiting like a queued run of the interactive lane
    queued = dagster_instance.create_run_for_job(job_def=job, tags={LANE_TAG: "interactive"})
    assert dagster_instance.get_run_by_id(queued.run_id).status == dg.DagsterRunStatus.NOT_STARTED

    held = _tick(upload_sensor, dagster_instance, resources)

    assert isinstance(held, dg.SkipReason) and "waiting to start" in held.skip_message
    assert set(catalog.work.ids_with_status("pending")) == set(ids)  # nothing taken: they will batch together
    dagster_instance.report_run_canceled(dagster_instance.get_run_by_id(queued.run_id))
    assert isinstance(_tick(upload_sensor, dagster_instance, resources), dg.SensorResult)


def test_uploads_go_by_plan_priority_in_runs_of_their_own_lane_and_bulk_waits_only_for_bulk(
        catalog, settings, dagster_instance):
    from imago_pipeline.definitions import build_definitions

    settings = settings.model_copy(update={"batch_size": 50})
    store = LocalBlobStore(settings.blob_root)
    samples = _sample_bytes()
    bulk_tenant, paying = catalog.clients.get_or_create("drops"), catalog.clients.get_or_create("paying")
    plans = settings.plans
    bulk = [register_image(catalog, store, settings, tenant_id=bulk_tenant.id, filename=n, data=d).image.id
            for n, d in samples[:4]]  # a drop folder or a reprocessing: priority 0
    free = register_image(catalog, store, settings, tenant_id=paying.id, filename="a", data=samples[4][1],
                          priority=plans["free"].priority).image.id
    enterprise = register_image(catalog, store, settings, tenant_id=paying.id, filename="b", data=samples[5][1],
                                priority=plans["enterprise"].priority).image.id
    resources = build_resources(settings)
    # a bulk run waits for a slot: new bulk work waits too (fuller batches), uploads do not
    job = build_definitions(settings).resolve_job_def("process_images")
    waiting = dagster_instance.create_run_for_job(job_def=job, tags={LANE_TAG: "bulk"})

    result = _tick(upload_sensor, dagster_instance, resources)

    assert isinstance(result, dg.SensorResult)
    runs = [(r.tags[LANE_TAG], int(r.tags["dagster/priority"]), _range(r)) for r in result.run_requests]
    assert runs == [("interactive", 30, [enterprise]), ("interactive", 10, [free])]  # highest first, one lane each
    assert set(catalog.work.ids_with_status("pending")) == set(bulk)
    dagster_instance.report_run_canceled(dagster_instance.get_run_by_id(waiting.run_id))
    result = _tick(upload_sensor, dagster_instance, resources)
    assert [(r.tags[LANE_TAG], r.tags["dagster/priority"], _range(r)) for r in result.run_requests] == [
        ("bulk", "0", sorted(bulk))]


def _range(request) -> list[int]:
    start, end = (int(request.tags[t]) for t in (ASSET_PARTITION_RANGE_START_TAG, ASSET_PARTITION_RANGE_END_TAG))
    return list(range(start, end + 1))


def test_settled_images_leave_the_partition_window_and_come_back_when_reprocessed(catalog, settings,
                                                                                   dagster_instance):
    """Images finished more than `partition_window_days` ago leave the `images` partitions (their history
    stays); images in work or finished recently keep theirs; reprocessing a retired one adds it back."""
    tenant, ids, resources = _uploads_in_batches_of_four(catalog, settings)
    _tick(upload_sensor, dagster_instance, resources)  # all taken into work, all partitions
    old, recent, in_work = ids[:3], ids[3:5], ids[5:]
    with catalog.session() as session:  # their runs finished them: the old ones eight days ago
        session.execute(update(Image).where(Image.id.in_(old + recent)).values(status="done", claim=None))
        session.execute(update(Image).where(Image.id.in_(old)).values(updated_at=datetime.now(UTC) - timedelta(days=8)))
        session.commit()

    result = _tick(partition_window_sensor, dagster_instance, resources)
    assert isinstance(result, dg.SensorResult)
    [request] = result.dynamic_partitions_requests
    assert isinstance(request, dg.DeleteDynamicPartitionsRequest)
    assert list(request.partition_keys) == [str(i) for i in old]
    for key in request.partition_keys:  # what the daemon does with the request
        dagster_instance.delete_dynamic_partition(request.partitions_def_name, key)
    assert dagster_instance.get_dynamic_partitions("images") == [str(i) for i in recent + in_work]
    again = _tick(partition_window_sensor, dagster_instance, resources)
    assert isinstance(again, dg.SkipReason) and "none settled" in again.skip_message

    # a user asks for a retired image again: the upload sensor makes it a partition and a run again
    catalog.for_tenant(tenant.id).request_reprocess(old[1])
    rerun = _tick(upload_sensor, dagster_instance, resources)
    assert [(r.tags[ASSET_PARTITION_RANGE_START_TAG], r.tags[ASSET_PARTITION_RANGE_END_TAG])
            for r in rerun.run_requests] == [(str(old[1]), str(old[1]))]
    assert dagster_instance.has_dynamic_partition("images", str(old[1]))

    keep_all = build_resources(settings.model_copy(update={"partition_window_days": 0}))
    assert "every image keeps" in _tick(partition_window_sensor, dagster_instance, keep_all).skip_message
