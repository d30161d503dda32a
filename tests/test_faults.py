"""The fault suite: real processes killed with SIGKILL, a real database stopped and started, real races.

Each story runs `imago serve` (or the API) as a real process tree on a home of its own, breaks something the
way the world does, and checks that every image ends up processed with no human action, that no run is left
STARTED, and that no process outlives its run. Recovery times are printed (`-s`).
"""

from __future__ import annotations

import hashlib
import re
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import dagster as dg
import httpx
import psutil
import pytest

from imago_pipeline.core.catalog import Catalog
from imago_pipeline.core.catalog.models import Image, ImageStage
from imago_pipeline.core.config import ImagoSettings
from imago_pipeline.core.ingest import check_upload
from imago_pipeline.core.stores.blobs import LocalBlobStore, original_key
from tests import postgres
from tests.conftest import SAMPLES, SERVICES, shared
from tests.http_server import serve
from tests.serve_harness import Serve, wait_until

pytestmark = [pytest.mark.slow, SERVICES, pytest.mark.timeout(1200)]
BATCH = 20
RUNS_END_S = 120  # an image's run and the SQL-model rebuild it triggers


def _photos(count: int, label: str = "cat", skip: int = 0):
    return sorted(shared("catsdogs", "train", label).glob("*.jpg"))[skip:skip + count]


def _unfinished_runs(home) -> list[dg.DagsterRun]:
    with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
        return [r for r in instance.get_runs() if not r.is_finished]


def _mid_batch(service: Serve, catalog: Catalog, ids: list[int]) -> list:
    """Wait until a run worker is in the middle of the batch (some stage results written, images unfinished),
    and return the run worker processes."""
    def started():
        with catalog.session() as session:
            stages = session.query(ImageStage).filter(ImageStage.image_id.in_(ids)).count()
            finished = session.query(Image).filter(Image.id.in_(ids), Image.status.in_(("done", "failed"))).count()
        workers = service.run_workers()
        return workers if stages and finished < len(ids) and workers else None
    return wait_until(started, 240, "a run in the middle of its batch", interval=0.2)


def _kill_mid_batch(service: Serve, catalog: Catalog, ids: list[int]) -> None:
    """SIGKILL the run workers found in the middle of the batch. A worker that ended on its own between being
    found and the kill (its run had just finished: the uploads arrive over several runs) does not count: the
    next run in the middle of the batch is waited for, until one is killed."""
    while True:
        killed = 0
        for worker in _mid_batch(service, catalog, ids):
            try:
                worker.kill()
                killed += 1
            except psutil.NoSuchProcess:
                pass
        if killed:
            return


@pytest.fixture
def service(tmp_path):
    service = Serve(tmp_path / "home", env={"IMAGO_BATCH_SIZE": str(BATCH), "IMAGO_CLAIM_GRACE_S": "30"})
    yield service
    if service.process is not None and service.process.poll() is None:
        service.stop()


def test_runs_end_with_their_processes(service, capsys):
    service.start()
    with service.client() as client:
        baseline: set[int] = set()
        for path in [SAMPLES / "Canon_40D.jpg", SAMPLES / "Nikon_D70.jpg", SAMPLES / "PaintTool_sample.jpg",
                     *_photos(2)]:
            image_id = service.upload(client, path)
            assert service.wait_finished(client, [image_id], 180)[image_id] == "done"
            # every run's: the image's, then the SQL models' rebuild that its new rows trigger (8 models in
            # the rebuild run's own process)
            leftover = wait_until(lambda: not service.run_workers() or None, RUNS_END_S, "the runs' processes to end")
            assert leftover
            # after the first run: the long-lived processes, the run host (started with the first run) included
            baseline = baseline or {p.pid for p in service.tree()}
        after = {p.pid for p in service.tree()}
        hosts = [p for p in service.tree() if p.name() == "imago-run-host"]
    # the same long-lived processes (webserver, daemon, code server, API, the run host) and nothing per run
    assert len(hosts) == 1 and hosts[0].pid in baseline
    assert after <= baseline | {p.pid for p in service.tree() if "resource_tracker" in " ".join(p.cmdline())}
    assert service.stop() == 0


def test_without_the_run_host_runs_start_in_the_code_server_as_dagster_does(tmp_path):
    service = Serve(tmp_path / "home", env={"IMAGO_WARM_RUNS": "0"})
    service.start()
    try:
        with service.client() as client:
            image_id = service.upload(client, SAMPLES / "Canon_40D.jpg")
            assert service.wait_finished(client, [image_id], 180)[image_id] == "done"
            assert wait_until(lambda: not service.run_workers() or None, RUNS_END_S, "the runs' processes to end")
        assert not [p for p in service.tree() if p.name() in ("imago-run-host", "imago-run")]
    finally:
        assert service.stop() == 0


def test_a_run_worker_killed_mid_batch_costs_no_image(service, capsys):
    service.start()
    catalog = Catalog.connect(ImagoSettings(home=service.home).catalog_url)
    with service.client() as client:
        ids = [service.upload(client, path) for path in _photos(BATCH)]
        _kill_mid_batch(service, catalog, ids)
        killed_at = time.time()
        statuses = service.wait_finished(client, ids, 600)
        recovered = time.time() - killed_at
    assert set(statuses.values()) == {"done"}
    wait_until(lambda: not _unfinished_runs(service.home) or None, 120, "no run left unfinished")
    with capsys.disabled():
        print(f"\nrun worker killed mid-batch: all {len(ids)} images done {recovered:.0f} s later")
    assert service.stop() == 0


def test_a_crash_of_the_whole_service_then_a_restart_costs_no_image(service, capsys):
    service.start()
    catalog = Catalog.connect(ImagoSettings(home=service.home).catalog_url)
    with service.client() as client:
        ids = [service.upload(client, path) for path in _photos(BATCH, "dog")]
        _mid_batch(service, catalog, ids)
        service.kill_everything()
        crashed_at = time.time()
        assert _unfinished_runs(service.home)  # what a crash leaves: a run STARTED with no process
        service.start()
        statuses = service.wait_finished(client, ids, 600)
        recovered = time.time() - crashed_at
        assert re.search(r"failed \d+ runs? a previous stop or crash left unfinished", service.output())
        wait_until(lambda: not _unfinished_runs(service.home) or None, 120, "no run left unfinished")
    assert set(statuses.values()) == {"done"}
    with capsys.disabled():
        print(f"\nwhole service killed mid-batch and restarted: all {len(ids)} images done {recovered:.0f} s later")
    assert service.stop() == 0


@pytest.mark.postgres
def test_an_upload_that_commits_after_a_newer_one_is_processed(tmp_path, postgres_admin_url):
    """On Postgres an id is handed out when the row is inserted, not when it commits: an upload whose
    transaction is still open when a newer upload commits has the lower id and becomes visible later."""
    name = f"imago_faults_{uuid.uuid4().hex[:8]}"
    url = postgres.create_database(postgres_admin_url, name)
    service = Serve(tmp_path / "home", env={"IMAGO_DATABASE_URL": url})
    try:
        service.start()
        catalog = Catalog.connect(url)
        tenant = catalog.clients.by_name("harness")
        settings = ImagoSettings(home=service.home)
        slow = (SAMPLES / "Canon_40D.jpg").read_bytes()
        sha = hashlib.sha256(slow).hexdigest()
        LocalBlobStore(settings.blob_root).put(original_key(tenant.id, sha, "late"), slow)
        checked = check_upload(slow, settings)
        with catalog.session() as held, service.client() as client:
            late = Image(tenant_id=tenant.id, sha256=sha, original_name="late.jpg", media_type="image/jpeg",
                         byte_size=len(slow), width=checked.info.width, height=checked.info.height,
                         blob_key=original_key(tenant.id, sha, "late"), status="pending")
            held.add(late)
            held.flush()  # the id is taken now; the row is invisible to others until commit
            early = service.upload(client, SAMPLES / "Nikon_D70.jpg")
            assert early > late.id
            assert service.wait_finished(client, [early], 180)[early] == "done"
            time.sleep(8)
            held.commit()
            assert service.wait_finished(client, [late.id, early], 180) == {late.id: "done", early: "done"}
        assert service.stop() == 0
    finally:
        if service.process is not None and service.process.poll() is None:
            service.stop()
        postgres.drop_database(postgres_admin_url, name)


def test_erasing_the_newest_image_never_gives_its_id_to_the_next_upload(tmp_path):
    from imago_api.main import create_app

    app = create_app(ImagoSettings(home=tmp_path / "imago", log_format="text"))
    catalog = app.state.catalog
    first = catalog.clients.issue_key(catalog.clients.create("first", scopes=["images:read", "images:write",
                                                                         "images:delete"]).id)
    second = catalog.clients.issue_key(catalog.clients.create("second").id)
    with serve(app) as base_url, httpx.Client(base_url=base_url, timeout=60) as http:
        newest = http.post("/images", headers={"X-API-Key": first},
                           files={"file": ("a.jpg", (SAMPLES / "Canon_40D.jpg").read_bytes())}).json()["id"]
        link = http.get(f"/images/{newest}/download-url", headers={"X-API-Key": first}).json()["url"]
        assert http.delete(f"/images/{newest}", headers={"X-API-Key": first}).status_code == 204
        after = http.post("/images", headers={"X-API-Key": second},
                          files={"file": ("b.jpg", (SAMPLES / "Nikon_D70.jpg").read_bytes())}).json()["id"]
        assert after > newest
        assert http.get(httpx.URL(link).path).status_code == 404
        removed_client = catalog.clients.create("gone")
        catalog.clients.disable(removed_client.id)
        assert catalog.clients.create("next").id > removed_client.id


def test_the_catalog_database_going_away_answers_503_then_recovers(tmp_path, capsys):
    """A real Postgres server stopped as if it crashed, then started again; the API is never restarted."""
    from imago_api.main import create_app

    cluster = postgres.ThrowawayCluster()
    try:
        url = postgres.create_database(cluster.url, "imago_outage")
        app = create_app(ImagoSettings(home=tmp_path / "imago", database_url=url, log_format="text"))
        catalog = app.state.catalog
        key = catalog.clients.issue_key(catalog.clients.create("outage").id)
        with serve(app) as base_url, httpx.Client(base_url=base_url, timeout=60,
                                                   headers={"X-API-Key": key}) as http:
            assert http.get("/images").status_code == 200
            cluster.halt()
            for answer in (http.get("/images"), http.post("/images", files={
                    "file": ("a.jpg", (SAMPLES / "Canon_40D.jpg").read_bytes())})):
                assert answer.status_code == 503, answer.text
                assert answer.json()["error"]["code"] == "catalog_unavailable" and answer.headers["Retry-After"]
            assert http.get("/health").status_code == 503
            cluster.start()
            back_at = time.time()
            wait_until(lambda: http.get("/images").status_code == 200, 60, "the API to recover")
            recovered = time.time() - back_at
            uploaded = http.post("/images", files={"file": ("a.jpg", (SAMPLES / "Canon_40D.jpg").read_bytes())})
            assert uploaded.status_code == 201
        with capsys.disabled():
            print(f"\ncatalog down: 503 catalog_unavailable; back {recovered:.1f} s after the database returned")
    finally:
        cluster.stop()


def test_erasing_the_first_image_of_a_queued_batch_holds_up_no_upload(tmp_path, capsys):
    """Its partition key ends the run's range: deleted, the run could not start or be retried, and the
    upload sensor waited for that run (2 × 180 s of run monitoring) before taking any tenant's upload."""
    from imago_pipeline.dagster_internals import forget_erased_partitions, partition_still_named

    service = Serve(tmp_path / "home", env={"IMAGO_BATCH_SIZE": "6"})
    catalog = Catalog.connect(ImagoSettings(home=tmp_path / "home").catalog_url)
    eraser = catalog.clients.create("eraser", scopes=["images:read", "images:write", "images:delete"])
    key = catalog.clients.issue_key(eraser.id)
    service.start()
    try:
        with httpx.Client(base_url=service.api, headers={"X-API-Key": key}, timeout=60) as http:
            photos = _photos(7, "dog")
            with ThreadPoolExecutor(6) as pool:  # together: one batch, one ranged run
                ids = sorted(pool.map(lambda p: service.upload(http, p), photos[:6]))
            first = ids[0]
            wait_until(lambda: http.get(f"/images/{first}").json()["status"] != "pending", 60, "the batch taken",
                       interval=0.05)
            began = time.monotonic()
            assert http.delete(f"/images/{first}").status_code == 204
            later = service.upload(http, photos[6])
            statuses = service.wait_finished(http, [*ids[1:], later], timeout=150)
            print(f"\nthe batch's other images and a later upload done {time.monotonic() - began:.0f} s "
                  "after the erasure")
            assert set(statuses.values()) == {"done"}
        with dg.DagsterInstance.from_config(str(tmp_path / "home" / "dagster")) as instance:
            wait_until(lambda: not partition_still_named(instance, str(first)), RUNS_END_S, "the runs to end")
            assert instance.has_dynamic_partition("images", str(first))  # left to the run that named it
            assert forget_erased_partitions(instance, "images", catalog.work.existing) == 1  # the retention job's
            assert not instance.has_dynamic_partition("images", str(first))
            assert all(instance.has_dynamic_partition("images", str(i)) for i in [*ids[1:], later])
            assert not instance.fetch_materializations(dg.AssetRecordsFilter(
                asset_key=dg.AssetKey("exif"), asset_partitions=[str(first)]), limit=1).records
    finally:
        service.stop()
