"""An erasure cut short after the image's catalog rows went (the process killed, the file store down) is
finished by the next DELETE of the image, by id or uuid, or by the daily retention job; never left with the
image's files and lake rows for good, and audited once."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from datetime import timedelta

import duckdb
import httpx
from sqlalchemy import select

from imago_api.main import create_app
from imago_pipeline.core.catalog import Catalog
from imago_pipeline.core.catalog.models import AuditEvent, PendingErasure
from imago_pipeline.core.enrichment.batch import ImageBatch
from imago_pipeline.core.enrichment.stages import exif, thumbnail
from imago_pipeline.core.erasure import erase_image, finish_pending_erasures
from imago_pipeline.core.ingest import register_image
from imago_pipeline.core.parallel import worker_pool
from imago_pipeline.core.stores.blobs import LocalBlobStore, thumbnail_key
from imago_pipeline.core.stores.lake import Lake
from tests.conftest import REPO, SAMPLES
from tests.http_server import serve

# A process that erases the image and is killed (SIGKILL, as the OOM killer or a crash would) right after
# the catalog's transaction: at its first file deletion.
ERASE_AND_DIE = textwrap.dedent("""
    import os, signal, sys
    from imago_pipeline.core.catalog import Catalog
    from imago_pipeline.core.erasure import erase_image
    from imago_pipeline.core.stores.blobs import LocalBlobStore
    from imago_pipeline.core.stores.lake import Lake

    class DiesOnDelete(LocalBlobStore):
        def delete(self, key):
            os.kill(os.getpid(), signal.SIGKILL)

    url, blobs, lake, tenant_id, image_id = sys.argv[1:]
    erase_image(Catalog.connect(url), DiesOnDelete(blobs), Lake(lake), tenant_id=int(tenant_id),
                image_id=int(image_id))
""")


def _processed_images(catalog: Catalog, settings, names: list[str]) -> tuple[int, list[int]]:
    """Registered images with an original, a thumbnail and rows in the lake (the EXIF and thumbnail stages)."""
    tenant = catalog.clients.create("t", scopes=["images:read", "images:delete"])
    store, lake = LocalBlobStore(settings.blob_root), Lake(settings.lake_root)
    ids = [register_image(catalog, store, settings, tenant_id=tenant.id, filename=name,
                          data=(SAMPLES / name).read_bytes()).image.id for name in names]
    with worker_pool(1) as pool:
        for stage in (exif, thumbnail):
            batch = ImageBatch(catalog, lake, stage=stage.__name__.rsplit(".", 1)[-1], code_version="test",
                               image_ids=ids, run_id="run-1")
            inputs = batch.inputs(store, max_pixels=settings.max_pixels, thumbnail_size=64, ocr_languages="eng")
            stage.run(batch, inputs, pool.map, *([store] if stage is thumbnail else []))
    return tenant.id, ids


def _lake_rows(settings, image_id: int) -> int:
    if not any(settings.lake_root.rglob("*.parquet")):  # the erasure deleted the lake's last file
        return 0
    return duckdb.sql(f"SELECT count(*) FROM read_parquet('{settings.lake_root}/*/**/*.parquet', "
                      f"union_by_name=true, hive_partitioning=true) WHERE image_id = {image_id}").fetchone()[0]


def _kill_mid_erasure(settings, tenant_id: int, image_id: int) -> None:
    process = subprocess.run([sys.executable, "-c", ERASE_AND_DIE, settings.catalog_url, str(settings.blob_root),
                              str(settings.lake_root), str(tenant_id), str(image_id)], cwd=REPO,
                             capture_output=True, text=True, timeout=120)
    assert process.returncode == -signal.SIGKILL, process.stderr


def _audits(catalog: Catalog) -> list[AuditEvent]:
    with catalog.session() as session:
        return list(session.scalars(select(AuditEvent).where(AuditEvent.action == "erase_image")))


def test_a_killed_erasure_is_finished_by_the_retried_delete_by_id_or_uuid(catalog, settings):
    tenant_id, (doomed, other, by_uuid) = _processed_images(
        catalog, settings, ["Canon_40D.jpg", "Nikon_D70.jpg", "iphone_hdr_YES.jpg"])
    scoped = catalog.for_tenant(tenant_id)
    original, uuid = scoped.get_image(doomed).blob_key, scoped.get_image(by_uuid).uuid
    store = LocalBlobStore(settings.blob_root)
    assert _lake_rows(settings, doomed) >= 2 and store.exists(thumbnail_key(tenant_id, doomed))

    _kill_mid_erasure(settings, tenant_id, doomed)
    # What the kill left: the catalog rows gone, the file, thumbnail and lake rows not (before: for good,
    # since a retried DELETE found no image and answered 404)
    assert scoped.get_image(doomed) is None and store.exists(original) and _lake_rows(settings, doomed) >= 2

    report = erase_image(catalog, store, Lake(settings.lake_root), tenant_id=tenant_id, image_id=doomed)
    assert report is not None and report.blobs_deleted == 2 and sum(report.lake_rows.values()) >= 2
    assert not store.exists(original) and not store.exists(thumbnail_key(tenant_id, doomed))
    assert _lake_rows(settings, doomed) == 0 and _lake_rows(settings, other) >= 2
    assert erase_image(catalog, store, Lake(settings.lake_root), tenant_id=tenant_id, image_id=doomed) is None
    assert [a.detail["catalog_rows"] for a in _audits(catalog)] == [report.as_audit()["catalog_rows"]]
    assert report.as_audit()["catalog_rows"] >= 3  # the image, its stages, its exif row ...

    # Over HTTP, by uuid: the erasure's record still knows it, so the retried DELETE answers 204, then 404
    _kill_mid_erasure(settings, tenant_id, by_uuid)
    app = create_app(settings)
    key = catalog.clients.issue_key(tenant_id)
    with serve(app) as url, httpx.Client(base_url=url, headers={"X-API-Key": key}, timeout=60) as http:
        assert http.get(f"/images/{uuid}").status_code == 404
        assert http.delete(f"/images/{uuid}").status_code == 204
        assert http.delete(f"/images/{uuid}").status_code == 404
        assert http.delete(f"/images/{by_uuid}").status_code == 404
    assert _lake_rows(settings, by_uuid) == 0 and len(_audits(catalog)) == 2
    with catalog.session() as session:
        assert session.scalars(select(PendingErasure)).all() == []
    assert scoped.get_image(other) is not None


def test_the_retention_job_finishes_erasures_cut_short_once_they_are_old_enough(catalog, settings):
    tenant_id, (doomed,) = _processed_images(catalog, settings, ["Canon_40D.jpg"])
    store, lake = LocalBlobStore(settings.blob_root), Lake(settings.lake_root)
    files = [catalog.for_tenant(tenant_id).get_image(doomed).blob_key, thumbnail_key(tenant_id, doomed)]
    _kill_mid_erasure(settings, tenant_id, doomed)
    assert finish_pending_erasures(catalog, store, lake) == []  # young: maybe still under way
    assert _lake_rows(settings, doomed) >= 2
    forgotten = []
    reports = finish_pending_erasures(catalog, store, lake, older_than=timedelta(0),
                                      forget_runs=lambda image_id: forgotten.append(image_id) or 3)
    assert [r.image_id for r in reports] == [doomed] and forgotten == [doomed]
    assert _lake_rows(settings, doomed) == 0 and not any(store.exists(key) for key in files)
    assert [a.detail["dagster_events"] for a in _audits(catalog)] == [3]
    assert finish_pending_erasures(catalog, store, lake, older_than=timedelta(0)) == []
