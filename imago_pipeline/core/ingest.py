"""Registering an upload: the one path shared by the API, the drop-folder sensor and `imago ingest`.

Content is validated before anything is stored, the bytes are deduplicated per tenant by SHA-256, the
blob is written before the catalog row (so a row never points at a missing blob), and the image starts
`pending` for the upload sensor to pick up.
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath, PureWindowsPath

from imago_pipeline.core.catalog import Catalog
from imago_pipeline.core.catalog.models import Image, utcnow
from imago_pipeline.core.config import ImagoSettings
from imago_pipeline.core.enrichment.decode import ImageInfo, InvalidImage, inspect_image
from imago_pipeline.core.stores.blobs import BlobStore, original_key
from imago_pipeline.core.stores.drops import DropSource


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


def _catalog_row(checked: CheckedUpload, *, tenant_id: int, filename: str | None, data: bytes,
                 status: str) -> dict:
    return dict(sha256=checked.sha256, original_name=clean_filename(filename), media_type=checked.info.media_type,
                byte_size=len(data), width=checked.info.width, height=checked.info.height,
                blob_key=original_key(tenant_id, checked.sha256), status=status)


def _write_blob(store: BlobStore, key: str, data: bytes) -> None:
    """Once per tenant and content: the key is the content's hash."""
    if not store.exists(key):
        store.put(key, data)


def store_uploads(catalog: Catalog, store: BlobStore, uploads: Sequence[tuple[CheckedUpload, str | None, bytes]],
                  *, tenant_id: int, status: str = "pending", claim: str | None = None) -> list[Registration]:
    """Store a batch of (checked, filename, data) in one catalog transaction (bulk ingest).
    With `claim` (status `queued`), the images are held by that in-process worker, not the upload sensor."""
    items = []
    for checked, filename, data in uploads:
        row = _catalog_row(checked, tenant_id=tenant_id, filename=filename, data=data, status=status)
        _write_blob(store, row["blob_key"], data)
        if claim is not None:
            row.update(claim=claim, claimed_at=(now := utcnow()), started_at=now)
        items.append(row)
    return [Registration(image, created) for image, created in catalog.for_tenant(tenant_id).register_images(items)]


def register_image(catalog: Catalog, store: BlobStore, settings: ImagoSettings, *, tenant_id: int,
                   filename: str | None, data: bytes, status: str = "pending",
                   quota_bytes: int | None = None, priority: int = 0) -> Registration:
    """Validate and store one upload; raises `InvalidImage` with a reason the uploader can read, or
    `catalog.QuotaExceeded` when a new image would take the tenant past `quota_bytes` (a duplicate costs nothing)."""
    checked = check_upload(data, settings)
    row = _catalog_row(checked, tenant_id=tenant_id, filename=filename, data=data, status=status)
    # `before_insert` runs only for content new to the tenant: written without an existence check (a stat, or
    # a HEAD on S3, that would almost always say no); rewriting the same bytes is harmless.
    image, created = catalog.for_tenant(tenant_id).register_image(
        **row, priority=priority, quota_bytes=quota_bytes, before_insert=lambda: store.put(row["blob_key"], data))
    return Registration(image=image, created=created)


@dataclass(frozen=True)
class DropReport:
    registered: int
    rejected: int


def ingest_drops(source: DropSource, catalog: Catalog, store: BlobStore, settings: ImagoSettings, *,
                 limit: int = 500) -> DropReport:
    """Register what arrived in a drop source for the default tenant, then file each item away (imported, or
    rejected with the reason). An item over the size limit is refused without being read."""
    tenant = catalog.clients.get_or_create(settings.default_tenant)
    registered = rejected = 0
    for item in source.pending(limit):
        try:
            if item.size > settings.max_upload_bytes:
                raise InvalidImage(f"{item.size} bytes is over the limit of {settings.max_upload_bytes} bytes",
                                   "too_large")
            register_image(catalog, store, settings, tenant_id=tenant.id, filename=item.name, data=source.read(item))
            source.file(item)
            registered += 1
        except InvalidImage as exc:
            source.file(item, rejected_because=str(exc))
            rejected += 1
    return DropReport(registered, rejected)
