"""The catalog on SQLite and on the real Postgres server: migrations, keys, dedupe, tenant scoping."""

from __future__ import annotations

import contextlib
import threading
import time

import pytest
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, select, text

from imago_pipeline.core.catalog import Catalog, ImageFilters, QuotaExceeded, StageOutcome
from imago_pipeline.core.catalog.db import alembic_config
from imago_pipeline.core.catalog.models import ApiKey, Exif
from imago_pipeline.core.ingest import clean_filename


def _register(catalog: Catalog, tenant_id: int, sha: str, name: str = "a.jpg"):
    return catalog.for_tenant(tenant_id).register_image(
        sha256=sha, original_name=name, media_type="image/jpeg", byte_size=10, width=2, height=3,
        blob_key=f"k/{sha}")


def test_migrations_create_every_table_and_are_idempotent(catalog, settings):
    tables = set(inspect(catalog.engine).get_table_names())
    assert {"tenants", "api_keys", "images", "image_stages", "image_checks", "exif", "thumbnails", "ocr", "vision",
            "image_tags", "image_search", "alembic_version"} <= tables
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    again = Catalog.connect(settings.catalog_url)  # a second start must not fail or re-create anything
    with again.engine.connect() as connection:
        assert connection.execute(text("SELECT version_num FROM alembic_version")).scalar() == head


def test_the_uuid_migration_gives_existing_images_distinct_uuids_and_keeps_ids_unique(database_url):
    """A catalog of the previous revision with images in it: upgraded, each image has its own uuid, the
    column is required and unique, and on SQLite ids are still never reused (the rebuild kept AUTOINCREMENT)."""
    from alembic import command

    from imago_pipeline.core.catalog.db import make_engine

    engine = make_engine(database_url)
    config = alembic_config(engine)
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0008")
        connection.execute(text("INSERT INTO tenants (name, plan, scopes, created_at) "
                                "VALUES ('old', 'free', '[]', CURRENT_TIMESTAMP)"))
        for n in range(3):
            connection.execute(text(
                "INSERT INTO images (tenant_id, sha256, original_name, media_type, byte_size, width, height, "
                "blob_key, status, created_at, updated_at) SELECT id, :sha, 'a.jpg', 'image/jpeg', 1, 1, 1, 'k', "
                "'done', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP FROM tenants"), {"sha": f"{n:064d}"})
    engine.dispose()
    catalog = Catalog.connect(database_url)  # migrates to the head, as a start does
    try:
        with catalog.engine.connect() as connection:
            rows = connection.execute(text("SELECT id, uuid FROM images ORDER BY id")).all()
        assert len(rows) == 3 and len({u for _, u in rows}) == 3 and all(len(u) == 36 for _, u in rows)
        columns = {c["name"]: c for c in inspect(catalog.engine).get_columns("images")}
        assert columns["uuid"]["nullable"] is False
        indexes = {i["name"]: i for i in inspect(catalog.engine).get_indexes("images")}
        assert indexes["ix_images_uuid"]["unique"]
        tenant_id = catalog.clients.get_or_create("old").id
        newest = rows[-1][0]
        assert catalog.for_tenant(tenant_id).image_id_for_uuid(rows[-1][1]) == newest
        catalog.for_tenant(tenant_id).delete_image(newest)
        image, _ = _register(catalog, tenant_id, "f" * 64)
        assert image.id > newest and image.uuid not in {u for _, u in rows}  # never reused
    finally:
        catalog.dispose()


def test_api_key_is_shown_once_and_only_its_hash_is_stored(catalog):
    tenant = catalog.clients.get_or_create("acme")
    key = catalog.clients.issue_key(tenant.id, ["images:read"])
    principal = catalog.clients.authenticate(key)
    assert principal and principal.tenant_id == tenant.id and principal.scopes == ("images:read",)
    assert catalog.clients.authenticate(key[:-1] + ("A" if key[-1] != "A" else "B")) is None
    assert catalog.clients.authenticate(None) is None and catalog.clients.authenticate("") is None
    with catalog.session() as session:
        stored = session.scalars(select(ApiKey)).one()
        dump = " ".join(str(getattr(stored, c.key)) for c in ApiKey.__table__.columns)
    assert key not in dump and key[12:] not in dump


def _statements(engine) -> list[str]:
    """Every statement the engine sends from now on (a listener on the real engine)."""
    from sqlalchemy import event

    sent: list[str] = []
    event.listen(engine, "before_cursor_execute", lambda *args: sent.append(args[2]))
    return sent


def test_a_remembered_key_costs_no_lookup_and_a_change_through_the_store_forgets_it_at_once(catalog):
    clients = catalog.clients
    clients.remember_s = 60
    tenant = clients.get_or_create("acme")
    key = clients.issue_key(tenant.id)
    assert clients.remembered(key) is None  # never authenticated: the caller must look it up
    sent = _statements(catalog.engine)
    principal = clients.authenticate(key)
    assert principal.tenant_id == tenant.id and len(sent) == 1
    assert clients.remembered(key) == principal and len(sent) == 1  # no statement
    assert clients.remembered(key[:-1] + ("A" if key[-1] != "A" else "B")) is None
    assert clients.authenticate("imk_" + "x" * 43) is None and clients.remembered("imk_" + "x" * 43) is None

    clients.update(tenant.id, plan="pro")  # a new plan is seen by the next request
    assert clients.remembered(key) is None and clients.authenticate(key).plan == "pro"
    new_key = clients.rotate_key(tenant.id)
    assert clients.remembered(key) is None and clients.authenticate(key) is None
    assert clients.authenticate(new_key) is not None and clients.remembered(new_key) is not None
    clients.disable(tenant.id)
    assert clients.remembered(new_key) is None and clients.authenticate(new_key) is None


def test_a_key_revoked_by_another_process_stops_within_the_remembered_time(catalog, settings):
    clients = catalog.clients
    clients.remember_s = 0.5
    tenant = clients.get_or_create("acme")
    key = clients.issue_key(tenant.id)
    assert clients.authenticate(key) is not None
    other = Catalog.connect(settings.catalog_url)  # what the CLI or another API process holds
    try:
        other.clients.rotate_key(tenant.id)
    finally:
        other.dispose()
    revoked_at = time.monotonic()
    while clients.remembered(key) is not None:
        assert time.monotonic() - revoked_at < 0.5
        time.sleep(0.02)
    assert clients.authenticate(key) is None


def test_a_lookup_that_overlaps_a_revocation_is_not_remembered(catalog, monkeypatch):
    """The lookup reads the key as valid, a rotation commits and forgets before the lookup stores its result:
    storing it would keep the revoked key working in this process."""
    clients = catalog.clients
    clients.remember_s = 60
    tenant = clients.get_or_create("acme")
    key = clients.issue_key(tenant.id)
    real_begin = catalog.begin

    @contextlib.contextmanager
    def begin_then_forget():
        with real_begin() as connection:
            yield connection
        clients.forget_authentications()  # as the rotation in another thread would, mid-lookup

    monkeypatch.setattr(catalog, "begin", begin_then_forget)
    assert clients.authenticate(key) is not None  # valid when read
    assert clients.remembered(key) is None


def test_same_bytes_dedupe_per_tenant_only(catalog):
    a = catalog.clients.get_or_create("a")
    b = catalog.clients.get_or_create("b")
    first, created = _register(catalog, a.id, "f" * 64)
    again, created_again = _register(catalog, a.id, "f" * 64, name="other-name.jpg")
    other, created_other = _register(catalog, b.id, "f" * 64)
    assert created and not created_again and again.id == first.id
    assert created_other and other.id != first.id


def test_every_read_is_scoped_to_its_tenant(catalog):
    a = catalog.clients.get_or_create("a")
    b = catalog.clients.get_or_create("b")
    image, _ = _register(catalog, a.id, "1" * 64)
    catalog.results.save_stage("exif", [StageOutcome(image.id, a.id, "done")], Exif,
                       [dict(image_id=image.id, tenant_id=a.id, make="Canon")])
    mine, theirs = catalog.for_tenant(a.id), catalog.for_tenant(b.id)
    assert mine.get_image(image.id).id == image.id
    assert theirs.get_image(image.id) is None
    assert theirs.get_exif(image.id) is None and theirs.get_stages(image.id) == []
    assert theirs.list_images(ImageFilters(), limit=10, offset=0) == ([], 0)
    items, total = mine.list_images(ImageFilters(camera_make="canon"), limit=10, offset=0)
    assert total == 1 and items[0].id == image.id


def test_overall_status_follows_the_stages(catalog):
    tenant = catalog.clients.get_or_create("a")
    ok, _ = _register(catalog, tenant.id, "2" * 64)
    bad, _ = _register(catalog, tenant.id, "3" * 64)
    half, _ = _register(catalog, tenant.id, "4" * 64)
    catalog.results.save_stage("exif", [StageOutcome(ok.id, tenant.id, "done"), StageOutcome(bad.id, tenant.id, "done"),
                                StageOutcome(half.id, tenant.id, "done")])
    catalog.results.save_stage("thumbnail", [StageOutcome(ok.id, tenant.id, "done"),
                                     StageOutcome(bad.id, tenant.id, "failed", "corrupt image data")])
    images = catalog.work.finish([ok.id, bad.id, half.id], ["exif", "thumbnail"])
    assert images[ok.id].status == "done" and images[ok.id].error is None
    assert images[bad.id].status == "failed" and images[bad.id].error == "thumbnail: corrupt image data"
    assert images[half.id].status == "processing"


def test_filenames_lose_paths_and_control_characters():
    assert clean_filename("../../etc/passwd") == "passwd"
    assert clean_filename("C:\\Users\\x\\photo.jpg") == "photo.jpg"
    assert clean_filename("evil\x00\r\nname\x1b.jpg") == "evilname.jpg"
    assert clean_filename("") == "upload" and clean_filename(None) == "upload"
    assert len(clean_filename("a" * 1000 + ".jpg")) == 200


def test_full_text_search_is_tenant_scoped_and_matches_every_word(catalog):
    from imago_pipeline.core.catalog.models import Ocr, Vision

    a = catalog.clients.get_or_create("a")
    b = catalog.clients.get_or_create("b")
    page, _ = _register(catalog, a.id, "5" * 64)
    photo, _ = _register(catalog, a.id, "6" * 64)
    other, _ = _register(catalog, b.id, "7" * 64)
    catalog.results.save_stage("ocr", [StageOutcome(page.id, a.id, "done"), StageOutcome(other.id, b.id, "done")],
                               Ocr, [
        dict(image_id=page.id, tenant_id=a.id, text="Le renard brun saute par-dessus le chien", has_text=True,
             mode="page", engine="tesseract", words=[], rotation=0),
        dict(image_id=other.id, tenant_id=b.id, text="renard brun", has_text=True, mode="page",
             engine="tesseract", words=[], rotation=0)])
    catalog.results.save_stage("vision", [StageOutcome(photo.id, a.id, "done")], Vision, [
        dict(image_id=photo.id, tenant_id=a.id, description="A brown dog on grass", tags=["dog", "outdoor"],
             model_used="local")])
    catalog.results.refresh_search([page.id, photo.id, other.id])
    mine = catalog.for_tenant(a.id)

    def found(q):
        return {i.id for i in mine.list_images(ImageFilters(text_query=q), limit=10, offset=0)[0]}

    assert found("renard") == {page.id}  # the other tenant's page is never found
    assert found("brun chien") == {page.id} and found("renard dog") == set()
    assert found("dog") == {photo.id} and found("outdoor") == {photo.id}
    assert found("\"; DROP TABLE images; --") == set()  # query syntax is neutralised, not executed
    assert found("") == {page.id, photo.id}  # an empty query does not filter


def test_the_same_bytes_uploaded_at_once_make_one_image(catalog):
    """Both uploads find no duplicate, both insert; the loser of the unique index answers with the winner's
    image (never an error, never two rows)."""
    tenant = catalog.clients.get_or_create("racing")
    both_checked = threading.Barrier(2, timeout=30)
    results = []

    def upload(name: str) -> None:
        results.append(catalog.for_tenant(tenant.id).register_image(
            sha256="e" * 64, original_name=name, media_type="image/jpeg", byte_size=10, width=2, height=3,
            blob_key="k", quota_bytes=1000, before_insert=both_checked.wait))

    threads = [threading.Thread(target=upload, args=(f"{n}.jpg",)) for n in ("first", "second")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(created for _, created in results) == [False, True]
    assert len({image.id for image, _ in results}) == 1
    assert len(catalog.for_tenant(tenant.id).list_images(ImageFilters(), limit=10, offset=0)[0]) == 1


def test_an_upload_over_quota_is_refused_before_anything_is_stored(catalog):
    tenant = catalog.clients.get_or_create("full")
    stored = []
    tenant_catalog = catalog.for_tenant(tenant.id)
    tenant_catalog.register_image(sha256="1" * 64, original_name="a.jpg", media_type="image/jpeg", byte_size=600,
                                  width=2, height=3, blob_key="k1", quota_bytes=1000,
                                  before_insert=lambda: stored.append("k1"))
    with pytest.raises(QuotaExceeded) as refused:
        tenant_catalog.register_image(sha256="2" * 64, original_name="b.jpg", media_type="image/jpeg",
                                      byte_size=600, width=2, height=3, blob_key="k2", quota_bytes=1000,
                                      before_insert=lambda: stored.append("k2"))
    assert (refused.value.used, refused.value.quota, refused.value.size) == (600, 1000, 600)
    again, created = tenant_catalog.register_image(  # the same bytes again cost nothing, even when full
        sha256="1" * 64, original_name="c.jpg", media_type="image/jpeg", byte_size=600, width=2, height=3,
        blob_key="k1", quota_bytes=1000, before_insert=lambda: stored.append("again"))
    assert not created and again.original_name == "a.jpg" and stored == ["k1"]


@pytest.mark.postgres
def test_pooled_connections_killed_by_the_server_are_replaced_quietly_when_idle_and_once_when_busy(
        postgres_admin_url, monkeypatch):
    """The pool pings a connection only after it sat idle (no round trip per request under load). A
    connection the server ended while idle is replaced before use; one ended during a burst fails the one
    statement that meets it, and the pool is renewed for the next."""
    import uuid as uuid_module

    from sqlalchemy.exc import OperationalError

    from imago_pipeline.core.catalog import db
    from tests import postgres

    name = f"imago_test_{uuid_module.uuid4().hex[:12]}"
    url = postgres.create_database(postgres_admin_url, name)
    engine = db.make_engine(url)
    admin = db.make_engine(postgres_admin_url)

    def backend() -> int:
        with engine.connect() as connection:
            return connection.execute(text("SELECT pg_backend_pid()")).scalar_one()

    def kill(pid: int) -> None:
        with admin.connect() as connection:
            assert connection.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid}).scalar_one()

    try:
        first = backend()
        assert backend() == first  # pooled: the same server process
        kill(first)
        monkeypatch.setattr(db, "PING_AFTER_IDLE_S", 0.0)  # as if it had been idle for long
        second = backend()  # pinged, found dead, replaced: no error reaches the caller
        assert second != first
        monkeypatch.setattr(db, "PING_AFTER_IDLE_S", 3600.0)  # a busy pool: no ping
        kill(second)
        with pytest.raises(OperationalError):
            backend()
        assert backend() not in (first, second)  # the pool reconnected by itself
    finally:
        engine.dispose()
        admin.dispose()
        postgres.drop_database(postgres_admin_url, name)
