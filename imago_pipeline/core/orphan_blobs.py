"""Stored files no catalog row points at, found and deleted (part of the daily `retention_job`; `imago purge`).

Why they exist: an upload writes its bytes before its row commits (a refused upload stores nothing, an
accepted one is never a row without its file), so a registration that does not commit leaves its file
behind: the database down at commit, the process killed in between, an upload found to be a duplicate or
over quota when its batch is retried alone. A run can also write the thumbnail of an image erased
meanwhile. Nobody can erase such a file through the API, so it would be kept for ever.

Why deleting one is safe: a file is considered only once it is older than `grace` (a day), far longer than
any registration takes, and an original's key is its image's own (`original_key`: content hash and image
uuid), so no later upload writes it again. A thumbnail is an orphan only when its image is gone, and image
ids are never reused. Keys of a layout the product does not make are never touched.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from imago_pipeline.core.catalog import Catalog
from imago_pipeline.core.stores.blobs import BlobStore, StoredBlob

DEFAULT_GRACE = timedelta(days=1)
_ORIGINAL = re.compile(r"tenants/(\d+)/originals/[0-9a-f]{2}/([0-9a-f]{64})(?:-[0-9a-f-]{1,36})?")
_THUMBNAIL = re.compile(r"tenants/(\d+)/thumbnails/(\d+)\.jpg")
_TEMPORARY = re.compile(r"(?:.*/)?\.tmp-\d+-\d+")  # a local write that a crash interrupted


@dataclass
class SweepReport:
    scanned: int = 0
    recent: int = 0  # younger than the grace period: not looked at
    unknown: int = 0  # a layout the product does not make: left alone
    orphans: int = 0
    orphan_bytes: int = 0
    deleted: int = 0

    def as_audit(self) -> dict:
        return {"scanned": self.scanned, "orphans": self.orphans, "orphan_bytes": self.orphan_bytes,
                "deleted": self.deleted}


def sweep_orphan_blobs(catalog: Catalog, store: BlobStore, *, grace: timedelta = DEFAULT_GRACE,
                       now: datetime | None = None, dry_run: bool = False, chunk: int = 500) -> SweepReport:
    """Delete (or, with `dry_run`, only count) the files under `tenants/` that no row points at and that
    were last written more than `grace` ago; one audit row when something was deleted."""
    cutoff = (now or datetime.now(UTC)) - grace
    report = SweepReport()
    pending: list[StoredBlob] = []
    for blob in store.list_blobs("tenants/"):
        report.scanned += 1
        if blob.modified > cutoff:
            report.recent += 1
            continue
        pending.append(blob)
        if len(pending) >= chunk:
            _settle(catalog, store, pending, report, dry_run)
            pending = []
    _settle(catalog, store, pending, report, dry_run)
    if report.deleted:
        catalog.audit_log.record("sweep_orphan_blobs", tenant_id=None, detail=report.as_audit())
    return report


def _settle(catalog: Catalog, store: BlobStore, blobs: list[StoredBlob], report: SweepReport,
            dry_run: bool) -> None:
    for blob in _orphans(catalog, blobs, report):
        report.orphans += 1
        report.orphan_bytes += blob.size
        if not dry_run:
            store.delete(blob.key)
            report.deleted += 1


def _orphans(catalog: Catalog, blobs: list[StoredBlob], report: SweepReport) -> Iterable[StoredBlob]:
    originals: dict[int, list[tuple[StoredBlob, str]]] = defaultdict(list)
    thumbnails: dict[int, list[tuple[StoredBlob, int]]] = defaultdict(list)
    for blob in blobs:
        if match := _ORIGINAL.fullmatch(blob.key):
            originals[int(match[1])].append((blob, match[2]))
        elif match := _THUMBNAIL.fullmatch(blob.key):
            thumbnails[int(match[1])].append((blob, int(match[2])))
        elif _TEMPORARY.fullmatch(blob.key):
            yield blob
        else:
            report.unknown += 1
    references = catalog.blob_references
    for tenant_id, found in originals.items():
        in_use = references.originals_in_use(tenant_id, {sha for _, sha in found})
        yield from (blob for blob, _ in found if blob.key not in in_use)
    for tenant_id, shown in thumbnails.items():
        present = references.images_present(tenant_id, {image_id for _, image_id in shown})
        yield from (blob for blob, image_id in shown if image_id not in present)
