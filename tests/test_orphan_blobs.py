"""Stored files and their rows: an erasure deletes only its image's file, even while the same bytes are
uploaded again, and the sweep deletes exactly the day-old files no row points at (local folder and S3)."""

from __future__ import annotations

import hashlib
import os
import time
import uuid
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest
from sqlalchemy import select

from imago_pipeline.core.catalog import Catalog, NewUpload, register_uploads
from imago_pipeline.core.catalog.models import AuditEvent
from imago_pipeline.core.erasure import erase_image
from imago_pipeline.core.ingest import register_image
from imago_pipeline.core.orphan_blobs import sweep_orphan_blobs
from imago_pipeline.core.stores.blobs import BlobStore, LocalBlobStore, build_blob_store, original_key, thumbnail_key
from imago_pipeline.core.stores.lake import Lake
from imago_pipeline.definitions import build_definitions
from tests.conftest import SAMPLES

DAY = timedelta(days=1)


class _DeleteHook(BlobStore):
    """A store that runs `before_first_delete` just before its first delete: an interleaving made exact."""

    def __init__(self, inner: BlobStore, before_first_delete):
        self.inner, self.before_first_delete = inner, before_first_delete

    def put(self, key, data):
        self.inner.put(key, data)

    def get(self, key):
        return self.inner.get(key)

    def exists(self, key):
        return self.inner.exists(key)

    def list_blobs(self, prefix):
        return self.inner.list_blobs(prefix)

    def delete(self, key):
        hook, self.before_first_delete = self.before_first_delete, None
        if hook is not None:
            hook()
        self.inner.delete(key)


def test_erasing_an_image_while_its_bytes_are_uploaded_again_keeps_the_new_upload(catalog, settings):
    store = LocalBlobStore(settings.blob_root)
    tenant = catalog.clients.get_or_create("t")
    data = (SAMPLES / "Canon_40D.jpg").read_bytes()
    first = register_image(catalog, store, settings, tenant_id=tenant.id, filename="a.jpg", data=data).image
    again = []

    def upload_again():  # the erasure's rows are gone, its file not yet: the same bytes are new again
        again.append(register_image(catalog, store, settings, tenant_id=tenant.id, filename="b.jpg", data=data))

    erase_image(catalog, _DeleteHook(store, upload_again), Lake(settings.lake_root), tenant_id=tenant.id,
                image_id=first.id)
    assert again[0].created and again[0].image.id != first.id
    assert store.get(again[0].image.blob_key) == data  # a key shared by content was deleted under it
    assert not store.exists(first.blob_key)


TWIN = "00000000-0000-4000-8000-000000000001"


def _orphans_of_every_kind(catalog: Catalog, store: BlobStore, settings) -> tuple[int, dict[str, str]]:
    """One stored file of each kind the sweep must tell apart; returns the tenant and {what: key}."""
    tenant = catalog.clients.get_or_create("t")
    data = (SAMPLES / "Canon_40D.jpg").read_bytes()
    kept = register_image(catalog, store, settings, tenant_id=tenant.id, filename="kept.jpg", data=data).image
    store.put(thumbnail_key(tenant.id, kept.id), b"thumbnail")
    erased = register_image(catalog, store, settings, tenant_id=tenant.id, filename="gone.jpg",
                            data=(SAMPLES / "Nikon_D70.jpg").read_bytes()).image
    erase_image(catalog, store, Lake(settings.lake_root), tenant_id=tenant.id, image_id=erased.id)
    store.put(thumbnail_key(tenant.id, erased.id), b"late thumbnail")  # a run finishing after the erasure
    # An upload refused after its bytes were written: its batch found the same content inserted meanwhile
    # and was retried alone, as a duplicate of the other's image.
    refused = original_key(tenant.id, kept.sha256, TWIN)
    twin = NewUpload(tenant.id, dict(sha256=kept.sha256, original_name="twin.jpg", media_type="image/jpeg",
                                     byte_size=len(data), width=1, height=1, status="pending", uuid=TWIN,
                                     blob_key=refused), None, lambda: store.put(refused, data))
    store.put(refused, data)  # written, as the batch did before its insert was refused ...
    assert register_uploads(catalog, [twin])[0][1] is False  # ... and alone it is a duplicate
    # A row from before keys were per image (the content hash alone).
    old = (SAMPLES / "phototest.tif").read_bytes()
    old_sha = hashlib.sha256(old).hexdigest()
    legacy = _put(store, f"tenants/{tenant.id}/originals/{old_sha[:2]}/{old_sha}", old)
    catalog.for_tenant(tenant.id).register_image(sha256=old_sha, original_name="old.tif", media_type="image/tiff",
                                                 byte_size=len(old), width=1, height=1, blob_key=legacy)
    return tenant.id, {
        "kept original": kept.blob_key,
        "kept thumbnail": thumbnail_key(tenant.id, kept.id),
        "thumbnail of an erased image": thumbnail_key(tenant.id, erased.id),
        "refused upload": refused,
        "killed before commit": _put(store, original_key(tenant.id, "e" * 64, str(uuid.uuid4())), data),
        "legacy key, no row": _put(store, f"tenants/{tenant.id}/originals/dd/{'d' * 64}", data),
        "legacy row": legacy,
        "unknown layout": _put(store, f"tenants/{tenant.id}/notes.txt", b"someone's file"),
        "unknown tenant": _put(store, original_key(tenant.id + 1000, "c" * 64, str(uuid.uuid4())), data),
    }


def _put(store: BlobStore, key: str, data: bytes) -> str:
    store.put(key, data)
    return key


ORPHANS = {"thumbnail of an erased image", "refused upload", "killed before commit", "legacy key, no row"}


def test_the_sweep_deletes_exactly_the_day_old_files_no_row_points_at(catalog, settings):
    store = LocalBlobStore(settings.blob_root)
    tenant_id, keys = _orphans_of_every_kind(catalog, store, settings)
    temporary = settings.blob_root / "tenants" / str(tenant_id) / "originals" / ".tmp-4242-0"  # cut short by a crash
    temporary.write_bytes(b"half")
    for path in settings.blob_root.rglob("*"):  # all written two days ago, but one
        if path.is_file():
            os.utime(path, (time.time() - 2 * 86400,) * 2)
    fresh = _put(store, original_key(tenant_id, "f" * 64, str(uuid.uuid4())), b"in flight")

    preview = sweep_orphan_blobs(catalog, store, dry_run=True)
    assert (preview.scanned, preview.recent, preview.unknown, preview.orphans, preview.deleted) == (
        len(keys) + 2, 1, 2, len(ORPHANS) + 1, 0)
    assert all(store.exists(key) for key in keys.values()) and temporary.exists()

    report = sweep_orphan_blobs(catalog, store, chunk=2)  # judged two files at a time
    assert report.deleted == len(ORPHANS) + 1 and report.orphan_bytes == preview.orphan_bytes > 0
    left = {what for what, key in keys.items() if store.exists(key)}
    assert left == set(keys) - ORPHANS
    assert not temporary.exists() and store.get(fresh) == b"in flight"  # too young to judge
    with catalog.session() as session:
        audit = [(a.action, a.detail) for a in session.scalars(select(AuditEvent))
                 if a.action == "sweep_orphan_blobs"]
    assert audit == [("sweep_orphan_blobs", report.as_audit())]
    assert sweep_orphan_blobs(catalog, store).deleted == 0  # nothing more, and no empty audit row
    with catalog.session() as session:
        assert sum(a.action == "sweep_orphan_blobs" for a in session.scalars(select(AuditEvent))) == 1


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_sweep_on_s3_judges_by_the_objects_last_modified_time(catalog, s3_settings):
    store = build_blob_store(s3_settings)
    _, keys = _orphans_of_every_kind(catalog, store, s3_settings)
    assert sweep_orphan_blobs(catalog, store).orphans == 0  # everything was written just now
    later = datetime.now(UTC) + 2 * DAY
    report = sweep_orphan_blobs(catalog, store, now=later)
    assert report.deleted == len(ORPHANS) and report.unknown == 2
    assert {what for what, key in keys.items() if store.exists(key)} == set(keys) - ORPHANS
    assert {b.key for b in store.list_blobs("tenants/")} == {key for what, key in keys.items() if what not in ORPHANS}


def test_the_sweep_deletes_nothing_when_the_catalog_does_not_look_like_the_stores(catalog, settings):
    """Many files of known tenants with no row (the wrong database, a restored backup): refused, unless forced."""
    store = LocalBlobStore(settings.blob_root)
    _, keys = _orphans_of_every_kind(catalog, store, settings)
    tenant = catalog.clients.get_or_create("t")
    strays = [_put(store, original_key(tenant.id, f"{i:064x}", str(uuid.uuid4())), b"x") for i in range(40)]
    later = datetime.now(UTC) + 2 * DAY
    refused = sweep_orphan_blobs(catalog, store, now=later)
    assert refused.orphans == len(ORPHANS) + 40 and refused.deleted == 0 and "is this the store's catalog" in (
        refused.refused or "")
    assert all(store.exists(key) for key in [*keys.values(), *strays])
    assert sweep_orphan_blobs(catalog, store, now=later, force=True).deleted == len(ORPHANS) + 40
    assert {what for what, key in keys.items() if store.exists(key)} == set(keys) - ORPHANS


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_daily_asset_fails_loudly_when_it_refuses_and_sweeps_when_forced(catalog, settings, dagster_instance):
    store = LocalBlobStore(settings.blob_root)
    _, keys = _orphans_of_every_kind(catalog, store, settings)
    tenant = catalog.clients.get_or_create("t")
    for i in range(40):
        _put(store, original_key(tenant.id, f"{i:064x}", str(uuid.uuid4())), b"x")
    for path in settings.blob_root.rglob("*"):
        os.utime(path, (time.time() - 2 * 86400,) * 2)
    defs = build_definitions(settings)
    sweep = defs.get_assets_def("orphan_blob_sweep")
    refused = dg.materialize([sweep], instance=dagster_instance, resources=defs.resources, raise_on_error=False)
    assert not refused.success
    failure = refused.failure_data_for_node("orphan_blob_sweep")
    assert "is this the store's catalog" in failure.user_failure_data.description
    assert all(store.exists(key) for key in keys.values())
    forced = dg.materialize([sweep], instance=dagster_instance, resources=defs.resources,
                            run_config={"ops": {"orphan_blob_sweep": {"config": {"force": True}}}})
    metadata = forced.asset_materializations_for_node("orphan_blob_sweep")[0].metadata
    assert metadata["orphans_deleted"].value == len(ORPHANS) + 40
    assert {what for what, key in keys.items() if store.exists(key)} == set(keys) - ORPHANS
