"""Stored files no catalog row points at, found and deleted (part of the daily `retention_job`; `imago purge`).

Why they exist: an upload writes its bytes inside its registration's transaction, before its row commits
(so an accepted upload is never a row without its file). A registration that does not commit leaves its
file behind: the database down at commit, the process killed in between, or a batch undone by a
concurrent insert of the same content whose upload, retried alone, is a duplicate. A run can also write
the thumbnail of an image erased meanwhile, and a crash can cut a local write short (a `.tmp-…` file).
Nobody can erase such a file through the API, so without the sweep it would be kept for ever.

Why deleting one is safe: a file is judged only once it is older than `grace` (a day), far longer than
any registration takes, and an original's key is its image's own (`original_key`: content hash and image
uuid), so no later upload writes it again. A thumbnail is an orphan only when its image is gone, and
image ids are never reused.

Why it may refuse: a catalog that does not match the store (the wrong database, a restored backup, another
stack sharing the bucket) would make every file look orphaned. Files of tenants the catalog does not know
and keys of a layout the product does not make are never touched, and when the orphans are more than
`max_share` of the files judged, nothing is deleted unless `force`: someone should look first.
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
DEFAULT_MAX_SHARE = 0.05
ALWAYS_ALLOWED = 10  # this many orphans may go whatever their share (a small store after a few failures)
_UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_ORIGINAL = re.compile(rf"tenants/([1-9]\d*)/originals/([0-9a-f]{{2}})/(\2[0-9a-f]{{62}})(?:-{_UUID})?")
_THUMBNAIL = re.compile(r"tenants/([1-9]\d*)/thumbnails/([1-9]\d*)\.jpg")
_TEMPORARY = re.compile(r"tenants/([1-9]\d*)/(?:.*/)?\.tmp-\d+-\d+")  # a local write that a crash cut short


@dataclass
class SweepReport:
    scanned: int = 0
    recent: int = 0  # younger than the grace period: not judged
    unknown: int = 0  # a layout the product does not make, or a tenant the catalog does not know: left alone
    orphans: int = 0
    orphan_bytes: int = 0
    deleted: int = 0
    refused: str | None = None  # why nothing was deleted although orphans were found

    @property
    def judged(self) -> int:
        return self.scanned - self.recent - self.unknown

    def as_audit(self) -> dict:
        return {"scanned": self.scanned, "orphans": self.orphans, "orphan_bytes": self.orphan_bytes,
                "deleted": self.deleted}


def sweep_orphan_blobs(catalog: Catalog, store: BlobStore, *, grace: timedelta = DEFAULT_GRACE,
                       max_share: float = DEFAULT_MAX_SHARE, force: bool = False, now: datetime | None = None,
                       dry_run: bool = False, chunk: int = 500) -> SweepReport:
    """Find the files under `tenants/` that no row points at and that were last written more than `grace`
    ago, then delete them (not with `dry_run`; not when they are over `max_share` of the files judged,
    unless `force`: `report.refused` says so). One audit row when something was deleted, even if the
    store fails part way."""
    cutoff = (now or datetime.now(UTC)) - grace
    report = SweepReport()
    tenants = catalog.blob_references.tenants()
    orphans: list[StoredBlob] = []
    pending: list[StoredBlob] = []
    for blob in store.list_blobs("tenants/"):
        report.scanned += 1
        if blob.modified > cutoff:
            report.recent += 1
            continue
        pending.append(blob)
        if len(pending) >= chunk:
            orphans.extend(_orphans(catalog, tenants, pending, report))
            pending = []
    orphans.extend(_orphans(catalog, tenants, pending, report))
    report.orphans, report.orphan_bytes = len(orphans), sum(blob.size for blob in orphans)
    if report.orphans > max(ALWAYS_ALLOWED, max_share * report.judged) and not force:
        report.refused = (f"{report.orphans} of the {report.judged} files judged have no row, over the "
                          f"{max_share:.0%} allowed: is this the store's catalog? Look, then sweep with force")
    if dry_run or report.refused:
        return report
    try:
        for blob in orphans:
            store.delete(blob.key)
            report.deleted += 1
    finally:
        if report.deleted:
            catalog.audit_log.record("sweep_orphan_blobs", tenant_id=None, detail=report.as_audit())
    return report


def _orphans(catalog: Catalog, tenants: set[int], blobs: list[StoredBlob],
             report: SweepReport) -> Iterable[StoredBlob]:
    originals: dict[int, list[tuple[StoredBlob, str]]] = defaultdict(list)
    thumbnails: dict[int, list[tuple[StoredBlob, int]]] = defaultdict(list)
    for blob in blobs:
        if (match := _ORIGINAL.fullmatch(blob.key)) and int(match[1]) in tenants:
            originals[int(match[1])].append((blob, match[3]))
        elif (match := _THUMBNAIL.fullmatch(blob.key)) and int(match[1]) in tenants:
            thumbnails[int(match[1])].append((blob, int(match[2])))
        elif (match := _TEMPORARY.fullmatch(blob.key)) and int(match[1]) in tenants:
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
