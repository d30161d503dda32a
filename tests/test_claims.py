"""Claims: images taken into work are finished by their run, or found and requeued when their worker is gone.

Runs here are real Dagster runs on a real instance (a run that fails, a run in progress); processes are real
processes that exit. The kill -9 versions of the same stories, under `imago serve`, are in test_faults.py.
"""

from __future__ import annotations

import subprocess
import sys

import dagster as dg

from imago_pipeline.core.catalog import StageOutcome
from imago_pipeline.core.claims import (
    CLAIM_TAG,
    OWNER_TAG,
    process_claim,
    reconcile,
    retry_batch_size,
    unfinished_stages,
)
from imago_pipeline.core.ingest import register_image
from imago_pipeline.core.stores.blobs import LocalBlobStore
from imago_pipeline.dagster_internals import ImagoRunLauncher, claim_alive, fail_orphaned_runs
from imago_pipeline.defs.intake.sensors import upload_sensor
from imago_pipeline.defs.reprocessing.sensors import stranded_images_sensor
from imago_pipeline.defs.resources import build_resources
from imago_pipeline.in_process import get_instance, process_images, reprocess_stale
from tests.conftest import SAMPLES

NAMES = ["Canon_40D.jpg", "Nikon_D70.jpg", "PaintTool_sample.jpg"]
ALL_STAGES = ("exif", "thumbnail", "ocr", "embedding", "classification", "vision", "image_summary")


def _upload(catalog, settings, names=NAMES):
    tenant = catalog.clients.get_or_create("t")
    store = LocalBlobStore(settings.blob_root)
    return tenant, [register_image(catalog, store, settings, tenant_id=tenant.id, filename=n,
                                   data=(SAMPLES / n).read_bytes()).image.id for n in names]


def _take(instance, settings):
    """One upload-sensor tick (its partitions added, its runs not launched): what a crash right after leaves."""
    with dg.build_sensor_context(instance=instance, resources=build_resources(settings)) as context:
        result = upload_sensor(context)
    for request in result.dynamic_partitions_requests:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    return result


def _run_with_tags(instance, tags, *, fail: bool, inside=None):
    @dg.asset
    def work(context):
        if inside:
            inside(context)
        if fail:
            raise RuntimeError("the run's worker gave up")

    return dg.materialize([work], instance=instance, tags=tags, raise_on_error=False)


def test_unfinished_stages_are_the_missing_or_failed_ones_and_what_reads_them():
    assert unfinished_stages({}) == ("exif", "thumbnail", "ocr", "embedding", "classification", "vision",
                                     "image_summary")
    done = dict.fromkeys(("exif", "thumbnail", "ocr", "embedding", "classification", "vision"), "done")
    assert unfinished_stages(done) == ("image_summary",)
    assert unfinished_stages({**done, "ocr": "failed"}) == ("ocr", "vision", "image_summary")
    assert unfinished_stages({**done, "vision": "failed"}) == ("vision", "image_summary")


def test_images_of_a_run_that_ended_without_finishing_them_are_requeued_with_what_is_left(
        catalog, settings, dagster_instance, monkeypatch):
    tenant, ids = _upload(catalog, settings)
    tick = _take(dagster_instance, settings)
    claim = tick.run_requests[0].tags[CLAIM_TAG]
    # the run got through EXIF and the thumbnail for the first image, then its worker died
    catalog.results.save_stage("exif", [StageOutcome(ids[0], tenant.id, "done")])
    catalog.results.save_stage("thumbnail", [StageOutcome(ids[0], tenant.id, "done")])
    failed = _run_with_tags(dagster_instance, {CLAIM_TAG: claim}, fail=True)
    assert not failed.success

    alive = lambda c: claim_alive(dagster_instance, c)  # noqa: E731
    assert reconcile(catalog, alive, max_retries=3, grace_s=60).images == 0  # too young to judge
    # a launched run that failed and that Dagster's run retries will re-execute: its retry finishes them
    dagster_instance.add_run_tags(failed.run_id, {"dagster/will_retry": "true"})
    assert reconcile(catalog, alive, max_retries=3, grace_s=0).images == 0
    with monkeypatch.context() as patience:  # ... unless that retry has not come after RETRY_PATIENCE_S
        patience.setattr("imago_pipeline.dagster_internals.RETRY_PATIENCE_S", 0)
        assert claim_alive(dagster_instance, claim) is False
    dagster_instance.add_run_tags(failed.run_id, {"dagster/will_retry": "false"})  # no retry (or it ran out)
    plan = reconcile(catalog, alive, max_retries=3, grace_s=0)

    assert plan.requeued == {ids[0]: ("ocr", "embedding", "classification", "vision", "image_summary"),
                             ids[1]: ALL_STAGES, ids[2]: ALL_STAGES}
    images = catalog.work.images_by_id(ids)
    assert {(i.status, i.claim, i.attempts) for i in images.values()} == {("requeued", None, 1)}
    # the upload sensor takes them again, each with only its unfinished stages
    again = _take(dagster_instance, settings)
    selections = sorted(sorted(k.to_user_string() for k in r.asset_selection) for r in again.run_requests)
    assert selections == sorted([sorted(plan.requeued[ids[0]]), sorted(plan.requeued[ids[1]])])


def test_a_claim_whose_run_is_still_working_is_left_alone(catalog, settings, dagster_instance):
    _, _ids = _upload(catalog, settings)
    claim = _take(dagster_instance, settings).run_requests[0].tags[CLAIM_TAG]
    seen = {}

    def during_the_run(context):
        seen["alive"] = claim_alive(context.instance, claim)
        seen["plan"] = reconcile(catalog, lambda c: claim_alive(context.instance, c), max_retries=3, grace_s=0)

    owner = process_claim()
    assert _run_with_tags(dagster_instance, {CLAIM_TAG: claim, OWNER_TAG: owner}, fail=False,
                          inside=during_the_run).success
    assert seen["alive"] is True and seen["plan"].images == 0 and seen["plan"].alive_claims == 1
    # it ended (successfully) without finishing them: now they are stranded
    assert claim_alive(dagster_instance, claim) is False


def test_a_run_request_that_never_became_a_run_and_a_dead_ingest_are_reconciled(catalog, settings,
                                                                                   dagster_instance):
    tenant, ids = _upload(catalog, settings, NAMES[:1])
    _take(dagster_instance, settings)  # claimed, but the daemon died before launching the run
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        dead_owner = process_claim(child.pid)
    finally:
        child.kill()
        child.wait()
    store = LocalBlobStore(settings.blob_root)
    ingested = register_image(catalog, store, settings, tenant_id=tenant.id, filename=NAMES[1],
                              data=(SAMPLES / NAMES[1]).read_bytes(), status="queued").image.id
    catalog.work.claim([ingested], dead_owner)

    plan = reconcile(catalog, lambda c: claim_alive(dagster_instance, c), max_retries=3, grace_s=0)

    assert set(plan.requeued) == {ids[0], ingested}


def test_retries_of_a_stranded_image_are_bounded_then_it_is_dead_lettered(catalog, settings, dagster_instance):
    _, ids = _upload(catalog, settings, NAMES[:1])
    alive = lambda c: claim_alive(dagster_instance, c)  # noqa: E731
    for attempt in range(1, 3):
        _take(dagster_instance, settings)
        assert reconcile(catalog, alive, max_retries=2, grace_s=0).requeued
        assert catalog.work.images_by_id(ids)[ids[0]].attempts == attempt
    _take(dagster_instance, settings)
    plan = reconcile(catalog, alive, max_retries=2, grace_s=0)
    image = catalog.work.images_by_id(ids)[ids[0]]
    assert plan.dead_lettered == ids and image.status == "failed" and image.gave_up_at is not None
    assert "stranded" in image.error and image.claim is None


def test_each_retry_of_a_dead_batch_takes_smaller_runs_so_one_image_cannot_take_the_others_down(
        catalog, settings, dagster_instance):
    """Before, a batch whose run kept dying (one photo tripping a stage's batch-wide code failed the run on
    every retry) was retried whole, and every image of it was dead-lettered with the one at fault."""
    import io

    from PIL import Image

    settings = settings.model_copy(update={"batch_size": 20})
    tenant = catalog.clients.get_or_create("t")
    store = LocalBlobStore(settings.blob_root)
    for shade in range(12):
        out = io.BytesIO()
        Image.new("RGB", (16, 16), (shade * 20, 0, 0)).save(out, format="PNG")
        register_image(catalog, store, settings, tenant_id=tenant.id, filename=f"{shade}.png", data=out.getvalue())
    alive = lambda c: claim_alive(dagster_instance, c)  # noqa: E731

    def run_sizes() -> list[int]:
        tick = _take(dagster_instance, settings)
        return sorted(int(r.tags.get("imago/batch_size", 1)) for r in tick.run_requests)

    sizes = [run_sizes()]
    for _ in range(3):  # each time, its runs die: requeued with one attempt more, taken again
        assert len(reconcile(catalog, alive, max_retries=3, grace_s=0).requeued) == 12
        sizes.append(run_sizes())
    assert sizes == [[12], [12], [2] * 6, [1] * 12]
    assert retry_batch_size(100, 0) == retry_batch_size(100, 1) == 100 and retry_batch_size(100, 2) == 10


def test_the_stranded_images_sensor_requeues_and_the_pipeline_finishes_them(catalog, settings, dagster_instance):
    settings = settings.model_copy(update={"claim_grace_s": 0})
    _, ids = _upload(catalog, settings, NAMES[:2])
    _take(dagster_instance, settings)
    with dg.build_sensor_context(instance=dagster_instance, resources=build_resources(settings)) as context:
        skip = stranded_images_sensor(context)
    assert "2 stranded images requeued" in skip.skip_message
    # the requeued images are processed like any reprocessing request, and finished
    process_images(catalog.work.ids_with_status("requeued"), settings=settings, instance=dagster_instance)
    images = catalog.work.images_by_id(ids)
    assert {(i.status, i.claim) for i in images.values()} == {("done", None)}


def test_imago_reprocess_sees_stranded_images(catalog, settings, monkeypatch, tmp_path):
    settings = settings.model_copy(update={"claim_grace_s": 0})
    instance = get_instance(settings)
    _, ids = _upload(catalog, settings, NAMES[:1])
    _take(instance, settings)
    groups, _ = reprocess_stale(settings=settings, instance=instance, dry_run=True,
                                plan_filters={"filters": _no_filters(), "budget": 10, "include_stale": False,
                                              "include_failed": True})
    assert [(g.stages, g.image_ids) for g in groups] == [
        (ALL_STAGES, ids)]
    assert catalog.work.images_by_id(ids)[ids[0]].status == "queued"  # a dry run changes nothing
    groups, runs = reprocess_stale(settings=settings, instance=instance)
    assert runs and all(r.success for r in runs)
    assert catalog.work.images_by_id(ids)[ids[0]].status == "done"


def _no_filters():
    from imago_pipeline.core.reprocessing import ReprocessFilters

    return ReprocessFilters()


STUCK_RUN = """
import sys, time
import dagster as dg
from imago_pipeline.core.claims import OWNER_TAG, process_claim

@dg.asset
def slow(context):
    print(context.run_id, flush=True)
    time.sleep(120)

with dg.DagsterInstance.from_config(sys.argv[1]) as instance:
    dg.materialize([slow], instance=instance, tags={OWNER_TAG: process_claim()})
"""


def test_the_launcher_reports_a_run_whose_worker_was_killed_and_orphaned_runs_are_failed(dagster_instance):
    home = dagster_instance.root_directory
    worker = subprocess.Popen([sys.executable, "-c", STUCK_RUN, home], stdout=subprocess.PIPE, text=True)
    run_id = worker.stdout.readline().strip()
    worker.kill()  # SIGKILL: no chance to report anything
    worker.wait()
    stuck = dagster_instance.get_run_by_id(run_id)
    assert stuck.status == dg.DagsterRunStatus.STARTED

    launcher = ImagoRunLauncher()
    launcher.register_instance(dagster_instance)
    assert launcher.check_run_worker_health(stuck).status.value == "FAILED"
    assert fail_orphaned_runs(dagster_instance) == [run_id]
    assert dagster_instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.FAILURE

    @dg.asset
    def quick(context):
        seen["health"] = launcher.check_run_worker_health(context.run).status.value

    seen = {}
    assert dg.materialize([quick], instance=dagster_instance, tags={OWNER_TAG: process_claim()}).success
    assert seen["health"] == "RUNNING"  # a run whose process lives is healthy
