"""Versioned reprocessing: a version bump makes exactly the affected partitions stale, and only they rerun."""

from __future__ import annotations

import dagster as dg
from dagster._core.definitions.data_version import StaleStatus
from dagster._utils.test.data_versions import get_stale_status_resolver

from imago_pipeline.core.ingest import register_image
from imago_pipeline.core.stores.blobs import LocalBlobStore
from imago_pipeline.definitions import build_definitions
from imago_pipeline.defs.batching import contiguous_ranges
from imago_pipeline.defs.reprocessing.sensors import stale_reprocess_sensor
from imago_pipeline.defs.resources import build_resources
from imago_pipeline.in_process import process_images, reprocess_stale
from tests.conftest import SAMPLES

NAMES = ("Canon_40D.jpg", "phototest.tif", "Nikon_D70.jpg")


def _status(instance, settings, asset: str, key: str) -> StaleStatus:
    assets = list(build_definitions(settings).resolve_asset_graph().assets_defs)
    return get_stale_status_resolver(instance, assets).get_status(dg.AssetKey(asset), key)


def test_contiguous_batches_never_span_an_image_that_is_not_a_target():
    order = [str(i) for i in range(1, 11)]
    batches = contiguous_ranges(order, {"1", "2", "3", "5", "7", "8", "9", "10"}, batch_size=3)
    assert [b.keys for b in batches] == [["1", "2", "3"], ["5"], ["7", "8", "9"], ["10"]]
    assert [b.partition_key for b in batches] == [None, "5", None, "10"]


def test_a_version_bump_makes_only_the_affected_partitions_stale(catalog, settings, dagster_instance):
    tenant = catalog.clients.get_or_create("t")
    store = LocalBlobStore(settings.blob_root)
    ids = [register_image(catalog, store, settings, tenant_id=tenant.id, filename=n, data=(SAMPLES / n).read_bytes(),
                          status="queued").image.id for n in NAMES]
    process_images(ids, settings=settings, instance=dagster_instance)
    keys = [str(i) for i in ids]
    assert reprocess_stale(settings=settings, instance=dagster_instance, dry_run=True)[0] == []
    assert {_status(dagster_instance, settings, "ocr", k) for k in keys} == {StaleStatus.FRESH}

    # OCR now reads English only: its code version changes, so OCR and what depends on it are redone
    english = settings.model_copy(update={"ocr_languages": "eng"})
    groups, _ = reprocess_stale(settings=english, instance=dagster_instance, dry_run=True)
    assert [(g.stages, sorted(g.image_ids)) for g in groups] == [(("image_summary", "ocr", "vision"), sorted(ids))]
    assert {_status(dagster_instance, english, "ocr", k) for k in keys} == {StaleStatus.STALE}
    assert {_status(dagster_instance, english, "exif", k) for k in keys} == {StaleStatus.FRESH}
    assert {_status(dagster_instance, english, "thumbnail", k) for k in keys} == {StaleStatus.FRESH}

    # one image redone with the new version: only the other two stay stale
    process_images_subset = build_definitions(english).resolve_job_def("process_images")
    process_images_subset.execute_in_process(instance=dagster_instance, partition_key=keys[0],
                                             asset_selection=[dg.AssetKey("ocr"), dg.AssetKey("vision")])
    assert _status(dagster_instance, english, "ocr", keys[0]) == StaleStatus.FRESH
    assert {_status(dagster_instance, english, "ocr", k) for k in keys[1:]} == {StaleStatus.STALE}

    materializations_before = {k: _count(dagster_instance, "exif", k) for k in keys}
    _, runs = reprocess_stale(settings=english, instance=dagster_instance, batch_size=10)
    assert len(runs) == 1 and runs[0].keys == keys[1:] and runs[0].success  # one ranged run for the two
    assert {_status(dagster_instance, english, "ocr", k) for k in keys} == {StaleStatus.FRESH}
    assert {k: _count(dagster_instance, "exif", k) for k in keys} == materializations_before  # exif untouched
    assert reprocess_stale(settings=english, instance=dagster_instance, dry_run=True)[0] == []
    scoped = catalog.for_tenant(tenant.id)
    assert {s.stage: s.code_version for s in scoped.get_stages(ids[1])}["ocr"].endswith("|eng")


def _count(instance, asset: str, key: str) -> int:
    return len(instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=[key]), limit=100).records)


def test_stale_sensor_asks_for_ranged_runs_of_the_stale_stages(catalog, settings, dagster_instance):
    tenant = catalog.clients.get_or_create("t")
    store = LocalBlobStore(settings.blob_root)
    ids = [register_image(catalog, store, settings, tenant_id=tenant.id, filename=n, data=(SAMPLES / n).read_bytes(),
                          status="queued").image.id for n in NAMES[:2]]
    process_images(ids, settings=settings, instance=dagster_instance)
    english = settings.model_copy(update={"ocr_languages": "eng"})
    defs = build_definitions(english)
    with dg.build_sensor_context(instance=dagster_instance, resources=build_resources(english),
                                 definitions=defs) as context:
        result = stale_reprocess_sensor(context)
    assert len(result.run_requests) == 1
    request = result.run_requests[0]
    assert set(request.asset_selection) == {dg.AssetKey(k) for k in ("ocr", "vision", "image_summary")}
    assert (request.tags["dagster/asset_partition_range_start"], request.tags["dagster/asset_partition_range_end"]) \
        == (str(ids[0]), str(ids[1]))
    # bulk work: below uploads, in the bulk lane (one run slot, niced), as the nightly batch's runs
    assert (request.tags["imago/lane"], request.tags["dagster/priority"]) == ("bulk", "0")
