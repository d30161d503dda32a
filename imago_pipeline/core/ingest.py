"""Registering uploads: for the API (`UploadRegistrar`, concurrent uploads in batches), the drop-folder
sensor (`register_image`) and `imago ingest` (`store_uploads`), all three through one catalog function,
`register_uploads`.

Content is validated before anything is stored, the bytes are deduplicated per tenant by SHA-256, the
blob is written before the catalog row (so a row never points at a missing blob), and the image starts
`pending` for the upload sensor to pick up.
"""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
import unicodedata
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import PurePosixPath, PureWindowsPath
from typing import Any

from imago_pipeline.core.catalog import Catalog, NewUpload, register_uploads
from imago_pipeline.core.catalog.models import Image, new_uuid, utcnow
from imago_pipeline.core.config import ImagoSettings
from imago_pipeline.core.enrichment.decode import ImageInfo, InvalidImage, inspect_image
from imago_pipeline.core.stores.blobs import BlobStore, original_key
from imago_pipeline.core.stores.drops import DropSource, ItemChanged

log = logging.getLogger("imago.ingest")


@dataclass(frozen=True)
class Registration:
    image: Image
    created: bool


@dataclass(frozen=True)
class CheckedUpload:
    """An upload that passed validation: what the catalog records, computed before anything is stored."""

    sha256: str
    info: ImageInfo


def clean_filename(name: str | None) -> str:
    """Keep a display name only: no directories, no control characters, bounded length."""
    name = PureWindowsPath(PurePosixPath(name or "").name).name  # drop both kinds of directory part
    name = "".join(ch for ch in unicodedata.normalize("NFC", name) if unicodedata.category(ch)[0] != "C")
    name = name.strip().lstrip(".")
    return name[:200] or "upload"


def check_upload(data: bytes, settings: ImagoSettings) -> CheckedUpload:
    """The CPU-heavy, side-effect-free half of registration (it can run in a worker process)."""
    info = inspect_image(data, max_bytes=settings.max_upload_bytes, max_pixels=settings.max_pixels)
    return CheckedUpload(sha256=hashlib.sha256(data).hexdigest(), info=info)


def _new_upload(store: BlobStore, checked: CheckedUpload, *, tenant_id: int, filename: str | None, data: bytes,
                status: str, quota_bytes: int | None = None, **columns: Any) -> NewUpload:
    """A checked upload ready for `register_uploads`: its catalog row (plus `columns`) and the write of its
    bytes, under a key of its own (`original_key`: the content's hash and the image's uuid). The write
    runs only for content new to the tenant, without an existence check (a stat, or a HEAD on S3, that
    would almost always say no); a retry of the same upload rewrites the same bytes."""
    image_uuid = new_uuid()
    key = original_key(tenant_id, checked.sha256, image_uuid)
    row = dict(sha256=checked.sha256, original_name=clean_filename(filename), media_type=checked.info.media_type,
               byte_size=len(data), width=checked.info.width, height=checked.info.height, uuid=image_uuid,
               blob_key=key, status=status, **columns)
    return NewUpload(tenant_id, row, quota_bytes, lambda: store.put(key, data))


def _registration(result: tuple[Image, bool] | Exception) -> Registration:
    if isinstance(result, Exception):
        raise result
    return Registration(*result)


def store_uploads(catalog: Catalog, store: BlobStore, uploads: Sequence[tuple[CheckedUpload, str | None, bytes]],
                  *, tenant_id: int, status: str = "pending", claim: str | None = None) -> list[Registration]:
    """Store a batch of (checked, filename, data) in one catalog transaction (bulk ingest); raises the first
    upload's error (the store down), the others registered. With `claim` (status `queued`), the images are
    held by that in-process worker, not the upload sensor."""
    held: dict[str, Any] = {} if claim is None else dict(claim=claim, claimed_at=(now := utcnow()), started_at=now)
    batch = [_new_upload(store, checked, tenant_id=tenant_id, filename=filename, data=data, status=status, **held)
             for checked, filename, data in uploads]
    return [_registration(result) for result in register_uploads(catalog, batch)]


def register_image(catalog: Catalog, store: BlobStore, settings: ImagoSettings, *, tenant_id: int,
                   filename: str | None, data: bytes, status: str = "pending",
                   quota_bytes: int | None = None, priority: int = 0) -> Registration:
    """Validate and store one upload; raises `InvalidImage` with a reason the uploader can read, or
    `catalog.QuotaExceeded` when a new image would take the tenant past `quota_bytes` (a duplicate costs nothing)."""
    upload = _new_upload(store, check_upload(data, settings), tenant_id=tenant_id, filename=filename, data=data,
                         status=status, quota_bytes=quota_bytes, priority=priority)
    return _registration(register_uploads(catalog, [upload])[0])


@dataclass(frozen=True)
class _Waiting:
    future: Future[Registration]
    settings: ImagoSettings
    tenant_id: int
    filename: str | None
    data: bytes
    quota_bytes: int | None
    priority: int
    checked: CheckedUpload | None


class UploadRegistrar:
    """`register_image` for uploads arriving concurrently (the API): one thread checks and registers them
    in batches, each batch one catalog transaction (`catalog.register_uploads`).

    Why: with a worker thread per upload, 20 concurrent uploads cost more CPU in thread switches and
    interpreter-lock hand-offs than in their own work, and each paid its own round trips and commit. Here an
    upload waits for at most the batch before it; one alone is registered at once. The thread ends after
    `idle_s` without uploads and starts again on the next (daemonic: it never keeps a process alive).
    Pass `checked` for content checked elsewhere (a large file, so its decode does not hold up a batch)."""

    def __init__(self, catalog: Catalog, store: BlobStore, *, max_batch: int = 64, idle_s: float = 30.0):
        self.catalog, self.store = catalog, store
        self.max_batch, self.idle_s = max_batch, idle_s
        self.batches = 0  # transactions so far (tests and benchmarks read it)
        self._queue: queue.SimpleQueue[_Waiting | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def submit(self, settings: ImagoSettings, *, tenant_id: int, filename: str | None, data: bytes,
               quota_bytes: int | None = None, priority: int = 0, checked: CheckedUpload | None = None
               ) -> Future[Registration]:
        """A future of the `Registration`, or of `InvalidImage` (checked against `settings`' limits),
        `QuotaExceeded` or the catalog's error."""
        future: Future[Registration] = Future()
        with self._lock:
            self._queue.put(_Waiting(future, settings, tenant_id, filename, data, quota_bytes, priority, checked))
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="imago-upload-registrar", daemon=True)
                self._thread.start()
        return future

    def close(self, timeout: float = 30.0) -> None:
        """Register what was submitted, then end the thread (a later upload starts it again)."""
        with self._lock:
            thread = self._thread
            if thread is not None:
                self._queue.put(None)
        if thread is not None:
            thread.join(timeout)

    def _run(self) -> None:
        try:
            while True:
                batch, stop = self._next_batch()
                self._register_all(batch)
                if stop:
                    with self._lock:  # submit() puts under this lock: nothing can arrive unseen
                        if self._queue.empty():
                            self._thread = None
                            return
        except BaseException:
            with self._lock:
                self._thread = None
            raise

    def _next_batch(self) -> tuple[list[_Waiting], bool]:
        """Up to `max_batch` waiting uploads, and whether to stop (idle for `idle_s`, or closed)."""
        batch: list[_Waiting] = []
        try:
            item = self._queue.get(timeout=self.idle_s)
        except queue.Empty:
            return batch, True
        while item is not None:
            if item.future.set_running_or_notify_cancel():  # else its caller gave up waiting
                batch.append(item)
            if len(batch) >= self.max_batch:
                return batch, False
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return batch, False
        return batch, True

    def _register_all(self, batch: list[_Waiting]) -> None:
        try:
            self._register(batch)
        except BaseException as exc:  # a bug here must not leave an upload waiting for ever
            for waiting in batch:
                if not waiting.future.done():
                    waiting.future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise

    def _register(self, batch: list[_Waiting]) -> None:
        ready: list[tuple[_Waiting, NewUpload]] = []
        for waiting in batch:
            try:
                checked = waiting.checked or check_upload(waiting.data, waiting.settings)
            except Exception as exc:  # `InvalidImage`, the uploader's to hear
                waiting.future.set_exception(exc)
                continue
            ready.append((waiting, _new_upload(self.store, checked, tenant_id=waiting.tenant_id,
                                               filename=waiting.filename, data=waiting.data, status="pending",
                                               quota_bytes=waiting.quota_bytes, priority=waiting.priority)))
        if not ready:
            return
        try:
            results = register_uploads(self.catalog, [upload for _, upload in ready])
        except Exception as exc:  # the database down: every upload of the batch hears it
            for waiting, _ in ready:
                waiting.future.set_exception(exc)
            return
        finally:
            self.batches += 1
        for (waiting, _), result in zip(ready, results, strict=True):
            if isinstance(result, Exception):
                waiting.future.set_exception(result)
            else:
                waiting.future.set_result(Registration(*result))


@dataclass(frozen=True)
class DropReport:
    registered: int
    rejected: int


def ingest_drops(source: DropSource, catalog: Catalog, store: BlobStore, settings: ImagoSettings, *,
                 limit: int = 500) -> DropReport:
    """Register what arrived in a drop source for the default tenant, then file each item away (imported, or
    rejected with the reason). An item over the size limit is refused without being read. One item never
    holds up the others: one replaced or gone since it was listed waits for the next look, and one the drop
    cannot read or file (its own error, logged) is skipped; an outage of the catalog or the blob store
    ends the look (raised)."""
    tenant = catalog.clients.get_or_create(settings.default_tenant)
    registered = rejected = 0
    for item in source.pending(limit):
        try:
            try:
                if item.refused:
                    raise InvalidImage(item.refused, "unsupported_type")
                if item.size > settings.max_upload_bytes:
                    raise InvalidImage(f"{item.size} bytes is over the limit of {settings.max_upload_bytes} bytes",
                                       "too_large")
                register_image(catalog, store, settings, tenant_id=tenant.id, filename=item.name,
                               data=source.read(item))
                source.file(item)
                registered += 1
            except InvalidImage as exc:
                source.file(item, rejected_because=str(exc))
                rejected += 1
        except ItemChanged:
            continue
        except OSError as exc:  # this item's file: unreadable, or it cannot be filed (the store's errors are
            log.warning("drop item %s skipped: %s", item.key, exc)  # StorageUnavailable, raised above)
    return DropReport(registered, rejected)
