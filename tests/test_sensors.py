"""Sensors evaluated with build_sensor_context on a real Dagster instance."""

from __future__ import annotations

import os
import time

import dagster as dg
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from imago_pipeline.defs.images.sensors import UploadCursor, drop_folder_sensor, upload_sensor
from imago_pipeline.defs.resources import build_resources
from imago_pipeline.registration import register_image
from imago_pipeline.storage.blobs import LocalBlobStore
from tests.conftest import SAMPLES, shared


def _sample_bytes() -> list[tuple[str, bytes]]:
    return [(p.name, p.read_bytes()) for p in sorted(SAMPLES.iterdir()) if p.suffix in (".jpg", ".png", ".webp", ".tif")]


def _tick(sensor, instance, resources, cursor=None):
    context = dg.build_sensor_context(instance=instance, cursor=cursor, resources=resources)
    result = sensor(context)
    if isinstance(result, dg.SensorResult):
        for request in result.dynamic_partitions_requests or []:
            instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    return result


def _uploads_in_batches_of_four(catalog, settings):
    """The samples uploaded (pending) by tenant `t`, and resources with batches of 4 images."""
    settings = settings.model_copy(update={"batch_size": 4})
    tenant = catalog.get_or_create_tenant("t")
    store = LocalBlobStore(settings.blob_root)
    ids = [register_image(catalog, store, settings, tenant_id=tenant.id, filename=n, data=d).image.id
           for n, d in _sample_bytes()]
    return tenant, ids, build_resources(settings)


def test_upload_sensor_adds_partitions_and_asks_for_ranged_batches(catalog, settings, dagster_instance):
    _, ids, resources = _uploads_in_batches_of_four(catalog, settings)

    result = _tick(upload_sensor, dagster_instance, resources)

    assert isinstance(result, dg.SensorResult)
    assert UploadCursor.parse(result.cursor).last_id == ids[-1]
    assert dagster_instance.get_dynamic_partitions("images") == [str(i) for i in ids]
    ranges = [(r.tags[ASSET_PARTITION_RANGE_START_TAG], r.tags[ASSET_PARTITION_RANGE_END_TAG])
              for r in result.run_requests]
    expected = [(str(ids[i]), str(ids[min(i + 3, len(ids) - 1)])) for i in range(0, len(ids), 4)]
    assert ranges == expected
    assert len({r.run_key for r in result.run_requests}) == len(result.run_requests)

    idle = _tick(upload_sensor, dagster_instance, resources, cursor=result.cursor)
    assert isinstance(idle, dg.SkipReason) and str(ids[-1]) in idle.skip_message


def test_reprocess_requests_become_ranged_runs_once_each(catalog, settings, dagster_instance):
    tenant, ids, resources = _uploads_in_batches_of_four(catalog, settings)
    first = _tick(upload_sensor, dagster_instance, resources)
    scoped = catalog.for_tenant(tenant.id)
    for image_id in ids[1:4] + ids[6:7]:  # ids[1..3] are consecutive partitions, ids[6] stands alone
        assert scoped.request_reprocess(image_id).status == "requeued"

    result = _tick(upload_sensor, dagster_instance, resources, cursor=first.cursor)

    assert isinstance(result, dg.SensorResult) and not result.dynamic_partitions_requests
    ranged = [(r.tags[ASSET_PARTITION_RANGE_START_TAG], r.tags[ASSET_PARTITION_RANGE_END_TAG])
              for r in result.run_requests if r.partition_key is None]
    single = [r.partition_key for r in result.run_requests if r.partition_key is not None]
    assert ranged == [(str(ids[1]), str(ids[3]))] and single == [str(ids[6])]
    assert all(r.tags["imago/reprocess"] == "requested" for r in result.run_requests)
    # The next tick does not ask again while they are still queued...
    assert isinstance(_tick(upload_sensor, dagster_instance, resources, cursor=result.cursor), dg.SkipReason)
    # ...but a new request for one of them is a new run.
    scoped.request_reprocess(ids[2])
    again = _tick(upload_sensor, dagster_instance, resources, cursor=result.cursor)
    assert [r.partition_key for r in again.run_requests] == [str(ids[2])]
    assert again.run_requests[0].run_key not in {r.run_key for r in result.run_requests}


def test_upload_sensor_ignores_images_registered_for_in_process_runs(catalog, settings, dagster_instance):
    tenant = catalog.get_or_create_tenant("t")
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
    tenant = catalog.get_or_create_tenant(settings.default_tenant)
    ids = catalog.image_ids_after(0, 10)
    assert len(ids) == 1 and catalog.for_tenant(tenant.id).get_image(ids[0]).original_name == "canon.jpg"
