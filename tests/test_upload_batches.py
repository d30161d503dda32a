"""Concurrent uploads registered in batches: one transaction for many, each upload with its own answer."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future

import pytest
from sqlalchemy import event, select

from imago_pipeline.core.catalog import Catalog, NewUpload, QuotaExceeded, register_uploads
from imago_pipeline.core.catalog.models import Image
from imago_pipeline.core.enrichment.decode import InvalidImage
from imago_pipeline.core.ingest import Registration, UploadRegistrar
from imago_pipeline.core.stores.blobs import LocalBlobStore, StorageUnavailable
from tests.conftest import shared


def _row(sha: str, size: int, name: str = "a.jpg") -> dict:
    return dict(sha256=sha * 64, original_name=name, media_type="image/jpeg", byte_size=size, width=2, height=3,
                blob_key=f"k{sha}", status="pending", priority=10)


class _Inserts:
    """Counts the INSERTs into `images` the catalog's engine sends (an executemany counts once)."""

    def __init__(self, catalog: Catalog):
        self.count = 0
        self.engine = catalog.engine
        event.listen(self.engine, "before_cursor_execute", self._seen)

    def _seen(self, conn, cursor, statement, parameters, context, executemany):
        if statement.lstrip().upper().startswith("INSERT INTO IMAGES"):
            self.count += 1

    def close(self):
        event.remove(self.engine, "before_cursor_execute", self._seen)


def test_a_batch_is_one_insert_with_duplicates_quota_and_failures_per_upload(catalog):
    full, other = catalog.clients.get_or_create("full"), catalog.clients.get_or_create("other")
    existing, _ = catalog.for_tenant(full.id).register_image(**_row("1", 300), quota_bytes=1000)
    stored: list[str] = []

    def store(key: str):
        return lambda: stored.append(key)

    def broken_disk():
        raise StorageUnavailable("writing a file: disk full")

    batch = [
        NewUpload(full.id, _row("1", 300, "again.jpg"), 1000, store("again")),  # already the tenant's
        NewUpload(full.id, _row("2", 400), 1000, store("2")),  # new: 700 of 1000 used
        NewUpload(full.id, _row("2", 400, "twice.jpg"), 1000, store("twice")),  # the same bytes in the batch
        NewUpload(full.id, _row("3", 400), 1000, store("3")),  # 700 + 400 > 1000
        NewUpload(other.id, _row("2", 400), None, store("other 2")),  # the same bytes, another tenant
        NewUpload(full.id, _row("4", 200), 1000, broken_disk),  # its bytes not stored: not registered
        NewUpload(full.id, _row("5", 300), 1000, store("5")),  # 700 + 300: fits (the failed one costs nothing)
    ]
    inserts = _Inserts(catalog)
    try:
        results = register_uploads(catalog, batch)
    finally:
        inserts.close()

    # one statement on Postgres; SQLite cannot return inserted rows in order from one, so one per row
    assert inserts.count == (1 if catalog.engine.dialect.name == "postgresql" else 3)
    assert (results[0][0].id, results[0][0].original_name, results[0][1]) == (existing.id, "a.jpg", False)
    two, created = results[1]
    assert created and two.original_name == "a.jpg" and two.priority == 10 and two.tenant_id == full.id
    assert (results[2][0].id, results[2][1]) == (two.id, False)
    assert isinstance(results[3], QuotaExceeded) and (results[3].used, results[3].size) == (700, 400)
    theirs, created = results[4]
    assert created and theirs.tenant_id == other.id and theirs.id != two.id
    assert isinstance(results[5], StorageUnavailable)
    five, created = results[6]
    assert created and five.sha256 == "5" * 64
    assert sorted(stored) == ["2", "5", "other 2"]  # only new content within quota is written (together)
    with catalog.session() as session:
        rows = session.execute(select(Image.tenant_id, Image.sha256)).all()
    assert sorted((t, s[0]) for t, s in rows) == sorted([(full.id, "1"), (full.id, "2"), (full.id, "5"),
                                                         (other.id, "2")])


def test_uploads_of_one_batch_with_different_columns_each_keep_their_own(catalog):
    """A batch mixing rows that set a column and rows that leave it to its default (a claimed bulk upload
    beside a plain one): each row is stored as given. One INSERT for all used to take the first row's
    columns: a later row's priority was dropped silently, or the whole batch refused."""
    tenant = catalog.clients.get_or_create("mixed")
    plain = {k: v for k, v in _row("a", 10).items() if k != "priority"}
    batch = [NewUpload(tenant.id, plain), NewUpload(tenant.id, _row("b", 10)),
             NewUpload(tenant.id, {**_row("c", 10), "claim": "worker-1"}), NewUpload(tenant.id, _row("d", 10))]
    results = register_uploads(catalog, batch)
    assert all(isinstance(r, tuple) and r[1] for r in results), results
    with catalog.session() as session:
        stored = {i.sha256[0]: (i.priority, i.claim) for i in session.scalars(select(Image))}
    assert stored == {"a": (0, None), "b": (10, None), "c": (10, "worker-1"), "d": (10, None)}


def test_a_batch_writes_the_bytes_of_its_new_uploads_at_the_same_time(catalog):
    """Each write waits until all three are under way: one after another, the first would wait in vain
    (writes to S3 cost a round trip each: a batch of twenty, one after another, took three times as long)."""
    tenant = catalog.clients.get_or_create("parallel")
    together = threading.Barrier(3, timeout=10)
    writers: set[str] = set()

    def write():
        together.wait()
        writers.add(threading.current_thread().name)

    results = register_uploads(catalog, [NewUpload(tenant.id, _row(sha, 10), None, write) for sha in "abc"])
    assert [created for _, created in results] == [True, True, True]
    assert len(writers) == 3


def test_when_an_upload_s_bytes_cannot_be_stored_its_twin_later_in_the_batch_is_stored_instead(catalog):
    """The same bytes twice in a batch: the first's write fails, so the batch is decided again without it and
    the second is stored and registered."""
    tenant = catalog.clients.get_or_create("twins")
    stored: list[str] = []

    def broken_disk():
        raise StorageUnavailable("writing a file: disk full")

    results = register_uploads(catalog, [NewUpload(tenant.id, _row("t", 10, "first.jpg"), 100, broken_disk),
                                         NewUpload(tenant.id, _row("t", 10, "second.jpg"), 100,
                                                   lambda: stored.append("second")),
                                         NewUpload(tenant.id, _row("u", 90), 100, lambda: stored.append("u"))])
    assert isinstance(results[0], StorageUnavailable)
    second, created = results[1]
    assert created and second.original_name == "second.jpg"
    assert results[2][1]  # 10 + 90 of 100: the twin's 10 counted once
    assert sorted(stored) == ["second", "u"]  # each stored once: "u" is not written again in the second pass


def test_a_batch_meeting_another_process_insert_of_the_same_bytes_registers_one_by_one(catalog, settings):
    """Between the batch's duplicate check and its insert, another process (its own catalog) registers one
    of the batch's images: the unique index refuses the batch, which is undone; each upload is then
    registered alone, the raced one answering with the other process's image."""
    tenant = catalog.clients.get_or_create("racing")
    elsewhere = Catalog.connect(settings.catalog_url)
    theirs: list[Image] = []

    def meanwhile_elsewhere():
        if not theirs:
            theirs.append(elsewhere.for_tenant(tenant.id).register_image(**_row("a", 10, "theirs.jpg"))[0])

    try:
        results = register_uploads(catalog, [NewUpload(tenant.id, _row("a", 10, "mine.jpg"), 1000, meanwhile_elsewhere),
                                             NewUpload(tenant.id, _row("b", 10), 1000, None)])
    finally:
        elsewhere.dispose()
    (raced, raced_created), (other, other_created) = results
    assert (raced.id, raced.original_name, raced_created) == (theirs[0].id, "theirs.jpg", False)
    assert other_created and other.sha256 == "b" * 64
    with catalog.session() as session:
        assert sorted(session.scalars(select(Image.original_name))) == ["a.jpg", "theirs.jpg"]


class _HeldStore(LocalBlobStore):
    """A blob store whose first write waits until released: the uploads sent meanwhile queue up."""

    def __init__(self, root):
        super().__init__(root)
        self.writing, self.release = threading.Event(), threading.Event()

    def put(self, key: str, data: bytes) -> None:
        if not self.writing.is_set():
            self.writing.set()
            assert self.release.wait(30)
        super().put(key, data)


def _photos(count: int) -> list[tuple[str, bytes]]:
    paths = sorted(shared("catsdogs", "val").glob("*/*.jpg"))[:count]
    return [(p.name, p.read_bytes()) for p in paths]


def test_concurrent_uploads_share_a_transaction_and_each_hears_its_own_answer(catalog, settings):
    tenant = catalog.clients.get_or_create("busy")
    store = _HeldStore(settings.blob_root)
    registrar = UploadRegistrar(catalog, store)
    photos = _photos(21)
    first = registrar.submit(settings, tenant_id=tenant.id, filename=photos[0][0], data=photos[0][1])
    assert store.writing.wait(30)  # the first batch (of one) is writing its blob: the rest queue up
    futures: dict[str, Future[Registration]] = {}
    for name, data in photos[1:]:
        futures[name] = registrar.submit(settings, tenant_id=tenant.id, filename=name, data=data, priority=20)
    futures["again.jpg"] = registrar.submit(settings, tenant_id=tenant.id, filename="again.jpg", data=photos[1][1])
    futures["notes.jpg"] = registrar.submit(settings, tenant_id=tenant.id, filename="notes.jpg", data=b"not an image")
    store.release.set()
    try:
        assert first.result(30).created
        answers = {name: future.exception(30) or future.result() for name, future in futures.items()}
    finally:
        registrar.close()
    assert registrar.batches == 2
    assert isinstance(answers.pop("notes.jpg"), InvalidImage)
    again = answers.pop("again.jpg")
    assert not again.created and again.image.id == answers[photos[1][0]].image.id
    assert all(r.created and r.image.priority == 20 and r.image.original_name == name for name, r in answers.items())
    assert all(store.get(r.image.blob_key) == data for (name, data), r in zip(photos[1:], answers.values(),
                                                                                  strict=True))
    assert len({r.image.id for r in answers.values()}) == 20


def test_the_registrar_thread_ends_when_idle_or_closed_and_starts_again(catalog, settings):
    tenant = catalog.clients.get_or_create("quiet")
    registrar = UploadRegistrar(catalog, LocalBlobStore(settings.blob_root), idle_s=0.2)

    def running() -> bool:
        return any(t.name == "imago-upload-registrar" and t.is_alive() for t in threading.enumerate())

    (name, data), (other_name, other_data) = _photos(2)
    assert registrar.submit(settings, tenant_id=tenant.id, filename=name, data=data).result(30).created
    deadline = time.monotonic() + 10
    while running() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not running()  # idle: ended
    again = registrar.submit(settings, tenant_id=tenant.id, filename=other_name, data=other_data)
    assert again.result(30).created  # started again on demand
    registrar.close()
    assert not running()


@pytest.mark.postgres
def test_with_the_database_down_every_upload_of_the_batch_hears_the_error(tmp_path):
    import socket

    from sqlalchemy.exc import OperationalError

    from imago_pipeline.core.config import ImagoSettings

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    down = Catalog.open(f"postgresql+psycopg2://postgres@127.0.0.1:{port}/imago")
    registrar = UploadRegistrar(down, LocalBlobStore(tmp_path / "blobs"))
    settings = ImagoSettings(home=tmp_path / "imago")
    try:
        futures = [registrar.submit(settings, tenant_id=1, filename=n, data=d) for n, d in _photos(3)]
        assert all(isinstance(f.exception(60), OperationalError) for f in futures)
    finally:
        registrar.close()
        down.dispose()


def test_a_bulk_batch_registers_what_it_could_store_and_raises_the_store_s_error(catalog, settings):
    """`imago ingest`'s batches go through the same function: a file whose bytes cannot be stored stops
    the command with the store's error, the rest of its batch registered (and held by the command)."""
    from imago_pipeline.core.ingest import check_upload, store_uploads

    class FlakyStore(LocalBlobStore):
        def put(self, key: str, data: bytes) -> None:
            if data == photos[1][1]:
                raise StorageUnavailable("writing a file: disk full")
            super().put(key, data)

    tenant = catalog.clients.get_or_create("bulk")
    photos = _photos(3)
    batch = [(check_upload(data, settings), name, data) for name, data in photos]
    with pytest.raises(StorageUnavailable):
        store_uploads(catalog, FlakyStore(settings.blob_root), batch, tenant_id=tenant.id, status="queued",
                      claim="ingest-1")
    with catalog.session() as session:
        rows = session.execute(select(Image.original_name, Image.status, Image.claim)
                               .where(Image.tenant_id == tenant.id)).all()
    assert sorted(rows) == sorted([(photos[0][0], "queued", "ingest-1"), (photos[2][0], "queued", "ingest-1")])
    again = store_uploads(catalog, LocalBlobStore(settings.blob_root), batch, tenant_id=tenant.id)
    assert [r.created for r in again] == [False, True, False]
