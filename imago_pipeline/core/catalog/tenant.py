"""What an API client sees of the catalog: every statement filters on its tenant, so a route cannot read
another tenant's rows by forgetting a WHERE clause."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Connection, CursorResult, Table, bindparam, delete, func, select
from sqlalchemy.exc import IntegrityError

from imago_pipeline.core.catalog import search
from imago_pipeline.core.catalog.models import (
    Classification,
    Exif,
    Feedback,
    Image,
    ImageCheck,
    ImageEmbedding,
    ImageStage,
    ImageTag,
    Ocr,
    PendingErasure,
    Thumbnail,
    Vision,
    new_uuid,
    utcnow,
)
from imago_pipeline.core.catalog.progress import announce

if TYPE_CHECKING:
    from imago_pipeline.core.catalog.catalog import Catalog


# The upload's statements, built once (building and keying a statement costs more than running it).
_IMAGES = cast(Table, Image.__table__)
_INSERT_IMAGES = _IMAGES.insert().returning(*_IMAGES.c, sort_by_parameter_order=True)
_USED_BYTES = (select(func.coalesce(func.sum(_IMAGES.c.byte_size), 0))
               .where(_IMAGES.c.tenant_id == bindparam("tenant_id")))
_SAME_CONTENTS = select(*_IMAGES.c).where(_IMAGES.c.tenant_id == bindparam("tenant_id"),
                                          _IMAGES.c.sha256.in_(bindparam("shas", expanding=True)))


class QuotaExceeded(Exception):
    def __init__(self, used: int, quota: int, size: int):
        super().__init__(f"storage quota exceeded: {used} of {quota} bytes used, this upload needs {size} more")
        self.used, self.quota, self.size = used, quota, size


@dataclass(frozen=True)
class NewUpload:
    """One checked upload waiting for `register_uploads`: `row` holds the image's columns (no tenant)."""
    tenant_id: int
    row: dict[str, Any]
    quota_bytes: int | None = None
    before_insert: Callable[[], None] | None = None


class ContradictoryFeedback(ValueError):
    """Feedback whose `correct` and `label` disagree about the prediction."""


def register_uploads(catalog: Catalog, uploads: Sequence[NewUpload]) -> list[tuple[Image, bool] | Exception]:
    """Register checked uploads (the API's concurrent ones, a bulk ingest's batch, or one alone) in one
    transaction: per tenant one statement finds the duplicates, one sums the storage used (only when a quota
    applies), and one inserts every new image (one per set of columns, when rows differ). In the order given,
    each upload's (image, created) or its own error (`QuotaExceeded`, or what its `before_insert` raised); an
    error of the whole transaction (the database down) is raised.

    A duplicate (the tenant's bytes already) costs nothing; within the batch, the same bytes twice are one
    image and the quota counts the uploads before. `before_insert` runs only for an upload that is new and
    within quota, inside the transaction (the upload writes its bytes there, so an upload refused at once
    stores nothing); the new uploads' calls run at the same time, on threads. The quota check and the insert are
    not serialised across transactions: concurrent batches can pass it together and overshoot by at most
    their own sizes. If another transaction inserts the same content meanwhile (the unique index refuses
    the batch), the batch is undone and each upload is registered alone; a file written for the undone
    batch that ends up unused (its upload now a duplicate) is left to `sweep_orphan_blobs`."""
    try:
        with catalog.begin() as connection:
            return _register_in(connection, uploads)
    except IntegrityError:
        return [_register_alone(catalog, upload) for upload in uploads]


def _register_alone(catalog: Catalog, upload: NewUpload) -> tuple[Image, bool] | Exception:
    """One upload in a transaction of its own. After the unique index refused it (the same bytes registered
    meanwhile), the next attempt finds the other's image as a duplicate; a third covers that image being
    erased in between."""
    outcome: tuple[Image, bool] | Exception = RuntimeError("not attempted")
    for _ in range(3):
        try:
            with catalog.begin() as connection:
                return _register_in(connection, [upload])[0]
        except IntegrityError as exc:
            outcome = exc
        except Exception as exc:  # this upload's error, as in the batch
            return exc
    return outcome


def _register_in(connection: Connection, uploads: Sequence[NewUpload]) -> list[tuple[Image, bool] | Exception]:
    by_tenant: dict[int, list[int]] = defaultdict(list)
    for index, upload in enumerate(uploads):
        by_tenant[upload.tenant_id].append(index)
    known: dict[tuple[int, str], Image] = {}
    used: dict[int, int] = {}
    for tenant_id, indexes in by_tenant.items():
        shas = list(dict.fromkeys(uploads[i].row["sha256"] for i in indexes))
        for row in connection.execute(_SAME_CONTENTS, {"tenant_id": tenant_id, "shas": shas}):
            known[tenant_id, row.sha256] = Image(**row._asdict())
        used[tenant_id] = (int(connection.execute(_USED_BYTES, {"tenant_id": tenant_id}).scalar_one())
                           if any(uploads[i].quota_bytes is not None for i in indexes) else 0)
    # Decide, store the new contents' bytes (together: their writes overlap), and decide again without the
    # uploads whose bytes could not be stored, until every upload to insert has its bytes stored. Leaving a
    # failed upload out only lowers the storage counted before the others, so no upload decided in is ever
    # decided out: one pass when nothing fails.
    failed: dict[int, Exception] = {}
    stored: set[int] = set()
    while True:
        results, inserts, same_as = _decide(uploads, by_tenant, known, used, failed)
        writing = [i for i in inserts if i not in stored]
        errors = _run_together([uploads[i].before_insert for i in writing])
        stored.update(i for i, error in zip(writing, errors, strict=True) if error is None)
        failed.update((i, error) for i, error in zip(writing, errors, strict=True) if error is not None)
        if all(error is None for error in errors):
            break
    # One INSERT per set of columns (one for a batch from one path): an executemany compiles its statement
    # from the first row's columns, so a later row's other columns would be dropped, or refused.
    same_columns: dict[frozenset[str], list[int]] = defaultdict(list)
    for index in inserts:
        same_columns[frozenset(uploads[index].row)].append(index)
    for indexes in same_columns.values():
        rows = connection.execute(_INSERT_IMAGES, [{**uploads[i].row, "tenant_id": uploads[i].tenant_id}
                                                   for i in indexes])
        for index, row in zip(indexes, rows, strict=True):
            results[index] = (Image(**row._asdict()), True)
    for index, earlier in same_as:
        result = results[earlier]
        results[index] = (result[0], False) if isinstance(result, tuple) else result
    return cast(list[tuple[Image, bool] | Exception], results)


def _decide(uploads: Sequence[NewUpload], by_tenant: dict[int, list[int]], known: dict[tuple[int, str], Image],
            used: dict[int, int], failed: dict[int, Exception]
            ) -> tuple[list[tuple[Image, bool] | Exception | None], list[int], list[tuple[int, int]]]:
    """Each upload's fate, in order: a known image (duplicate), the same bytes as an earlier upload of the
    batch, over quota (counting the uploads before it), failed, or to insert (returned apart)."""
    results: list[tuple[Image, bool] | Exception | None] = [None] * len(uploads)
    inserts: list[int] = []
    same_as: list[tuple[int, int]] = []  # (upload, the earlier upload in this batch with the same bytes)
    for tenant_id, indexes in by_tenant.items():
        counted = used[tenant_id]
        first: dict[str, int] = {}
        for index in indexes:
            upload = uploads[index]
            sha256, size = upload.row["sha256"], upload.row["byte_size"]
            if (tenant_id, sha256) in known:
                results[index] = (known[tenant_id, sha256], False)
            elif index in failed:
                results[index] = failed[index]
            elif sha256 in first:
                same_as.append((index, first[sha256]))
            elif upload.quota_bytes is not None and counted + size > upload.quota_bytes:
                results[index] = QuotaExceeded(counted, upload.quota_bytes, size)
            else:
                counted += size
                first[sha256] = index
                inserts.append(index)
    return results, inserts, same_as


def _run_together(calls: Sequence[Callable[[], None] | None]) -> list[Exception | None]:
    """Run the calls (blob writes: I/O, done without the interpreter lock) on threads of their own, at most
    eight at once; each call's error or None, in order. A write to S3 is a round trip: with the store 10 ms
    away, 20 clients' uploads took p50 660 ms written one after another and 202 ms together
    (`bench/api_load.py --s3 --s3-rtt-ms 10`)."""
    def run(call: Callable[[], None] | None) -> Exception | None:
        try:
            if call is not None:
                call()
        except Exception as exc:  # this upload's error: the others go on
            return exc
        return None

    if len(calls) <= 1:
        return [run(call) for call in calls]
    with ThreadPoolExecutor(min(8, len(calls)), thread_name_prefix="imago-blob-write") as pool:
        return list(pool.map(run, calls))


@dataclass(frozen=True)
class ImageFilters:
    status: str | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None
    camera_make: str | None = None
    country_code: str | None = None  # ISO 3166-1 alpha-2 of where the photo was taken
    text_query: str | None = None
    dead_letter: bool | None = None


class TenantCatalog:
    """Catalog reads and writes for one tenant; every statement filters on `tenant_id`."""

    def __init__(self, catalog: Catalog, tenant_id: int):
        self.catalog = catalog
        self.tenant_id = tenant_id

    def register_image(self, *, sha256: str, original_name: str, media_type: str, byte_size: int, width: int,
                       height: int, blob_key: str, status: str = "pending", priority: int = 0,
                       quota_bytes: int | None = None, before_insert: Callable[[], None] | None = None,
                       uuid: str | None = None) -> tuple[Image, bool]:
        """Insert an image, or return the tenant's existing image with the same content: `register_uploads`
        for one upload. Raises its error (`QuotaExceeded` past `quota_bytes`, or what `before_insert`
        raised). `pending` images are picked up by the upload sensor; `queued` ones by whoever registered
        them. `uuid`: the one its `blob_key` was made with (else a new one)."""
        row = dict(sha256=sha256, original_name=original_name, media_type=media_type, byte_size=byte_size,
                   width=width, height=height, blob_key=blob_key, status=status, priority=priority,
                   uuid=uuid or new_uuid())
        result = register_uploads(self.catalog, [NewUpload(self.tenant_id, row, quota_bytes, before_insert)])[0]
        if isinstance(result, Exception):
            raise result
        return result

    def get_image(self, image_id: int) -> Image | None:
        with self.catalog.session() as session:
            return session.scalar(select(Image).where(Image.id == image_id, Image.tenant_id == self.tenant_id))

    def image_id_for_uuid(self, uuid: str) -> int | None:
        with self.catalog.session() as session:
            return session.scalar(select(Image.id).where(Image.uuid == uuid, Image.tenant_id == self.tenant_id))

    def get_images(self, image_ids: Sequence[int]) -> list[Image]:
        with self.catalog.session() as session:
            return list(session.scalars(select(Image).where(Image.tenant_id == self.tenant_id,
                                                            Image.id.in_(list(image_ids)))))

    def find_by_sha256(self, sha256: str) -> Image | None:
        with self.catalog.session() as session:
            return session.scalar(select(Image).where(Image.tenant_id == self.tenant_id, Image.sha256 == sha256))

    def storage_used(self) -> tuple[int, int]:
        """(bytes of originals, images) held by the tenant: what the storage quota counts."""
        with self.catalog.session() as session:
            count, total = session.execute(select(func.count(), func.coalesce(func.sum(Image.byte_size), 0))
                                           .where(Image.tenant_id == self.tenant_id)).one()
            return int(total), int(count)

    def request_reprocess(self, image_id: int, priority: int = 0) -> Image | None:
        """Queue the image for the upload sensor again (every stage is redone), at the asker's priority."""
        with self.catalog.session() as session:
            image = session.scalar(select(Image).where(Image.id == image_id, Image.tenant_id == self.tenant_id))
            if image is None:
                return None
            image.status, image.error, image.updated_at = "requeued", None, utcnow()
            # a person asked: every stage, and automatic retries start over (also for a dead letter)
            image.requeue_stages, image.attempts, image.next_attempt_at, image.gave_up_at = None, 0, None, None
            image.priority = priority
            announce(session, [image.id])
            session.commit()
            return image

    def delete_image(self, image_id: int) -> tuple[dict[str, int], PendingErasure] | None:
        """Delete the image's catalog rows (every table, and the search index) in one transaction, which
        also records the erasure as pending (for the stores outside the catalog: `core/erasure.py`).

        Returns ({table: rows deleted}, the pending erasure), or None when the tenant has no such image.
        """
        tables: list[Any] = [ImageStage, ImageCheck, Exif, Thumbnail, Ocr, ImageEmbedding, Vision, ImageTag,
                             Classification, Feedback]
        counts: dict[str, int] = {}
        with self.catalog.session() as session:
            image = session.scalar(select(Image).where(Image.id == image_id, Image.tenant_id == self.tenant_id))
            if image is None:
                return None
            for table in tables:  # explicit, not only ON DELETE CASCADE: the counts go to the audit log
                result = session.execute(delete(table).where(table.image_id == image_id,
                                                             table.tenant_id == self.tenant_id))
                counts[table.__tablename__] = cast(CursorResult, result).rowcount
            search.delete_documents(session, [image_id])
            session.delete(image)
            counts["images"] = 1
            pending = PendingErasure(tenant_id=self.tenant_id, image_id=image_id, image_uuid=image.uuid,
                                     blob_key=image.blob_key, catalog_rows=sum(counts.values()))
            session.add(pending)
            announce(session, [image_id])  # a live stream of it ends
            session.commit()
        return counts, pending  # the catalog is scrubbed when the erasure is finished

    def list_images(self, filters: ImageFilters, *, limit: int, offset: int) -> tuple[list[Image], int]:
        query = select(Image).where(Image.tenant_id == self.tenant_id)
        if filters.status:
            query = query.where(Image.status == filters.status)
        if filters.created_from:
            query = query.where(Image.created_at >= filters.created_from)
        if filters.created_to:
            query = query.where(Image.created_at < filters.created_to)
        if filters.dead_letter is not None:
            query = query.where(Image.gave_up_at.is_not(None) if filters.dead_letter else Image.gave_up_at.is_(None))
        if filters.text_query:
            with self.catalog.session() as session:
                matches = search.matching_image_ids(session, self.tenant_id, filters.text_query)
            query = query.where(Image.id.in_(matches))
        if filters.camera_make or filters.country_code:
            query = query.join(Exif, Exif.image_id == Image.id).where(Exif.tenant_id == self.tenant_id)
        if filters.camera_make:
            query = query.where(func.lower(Exif.make) == filters.camera_make.lower())
        if filters.country_code:
            query = query.where(Exif.country_code == filters.country_code.upper())
        with self.catalog.session() as session:
            total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
            items = list(session.scalars(query.order_by(Image.id.desc()).limit(limit).offset(offset)))
        return items, total

    def _one(self, model, image_id: int):
        with self.catalog.session() as session:
            return session.scalar(select(model).where(model.image_id == image_id, model.tenant_id == self.tenant_id))

    def get_exif(self, image_id: int) -> Exif | None:
        return self._one(Exif, image_id)

    def get_classification(self, image_id: int) -> Classification | None:
        return self._one(Classification, image_id)

    def get_embedding(self, image_id: int) -> ImageEmbedding | None:
        return self._one(ImageEmbedding, image_id)

    def embeddings_state(self, model: str) -> tuple[int, Any]:
        """(count, newest creation time) of the tenant's embeddings: changes whenever one is added or removed."""
        with self.catalog.session() as session:
            count, newest = session.execute(select(func.count(), func.max(ImageEmbedding.created_at)).where(
                ImageEmbedding.tenant_id == self.tenant_id, ImageEmbedding.model == model)).one()
        return int(count), newest

    def embeddings(self, model: str) -> list[tuple[int, bytes, bytes | None]]:
        """Every embedding of the tenant made by `model` (the current embedding version): (image id, vector,
        fingerprint)."""
        with self.catalog.session() as session:
            rows = session.execute(select(ImageEmbedding.image_id, ImageEmbedding.vector, ImageEmbedding.fingerprint)
                                   .where(ImageEmbedding.tenant_id == self.tenant_id, ImageEmbedding.model == model)
                                   .order_by(ImageEmbedding.image_id)).all()
        return [(r[0], r[1], r[2]) for r in rows]

    def add_feedback(self, image_id: int, *, correct: bool, label: str | None) -> Feedback:
        """Record a verdict on the image's current classification. The true label is the prediction when it
        was right; when it was wrong, the caller says what it is (`label`). A verdict that contradicts itself
        (right, with another label; wrong, with the predicted one) raises `ContradictoryFeedback`: stored,
        it would count as agreement in the monitoring while retraining learns the other label."""
        predicted = self.get_classification(image_id)
        if predicted is not None and label is not None and correct != (label == predicted.label):
            said = f"`correct` is true but `label` is '{label}'" if correct else "`correct` is false but `label` is it"
            raise ContradictoryFeedback(f"the prediction was '{predicted.label}': {said}")
        true_label = label
        if true_label is None and predicted is not None and correct:
            true_label = predicted.label
        row = Feedback(tenant_id=self.tenant_id, image_id=image_id, correct=correct, label=true_label,
                       predicted_label=predicted.label if predicted else None,
                       model_version=predicted.model_version if predicted else None)
        with self.catalog.session() as session:
            session.add(row)
            session.commit()
        return row

    def get_ocr(self, image_id: int) -> Ocr | None:
        return self._one(Ocr, image_id)

    def get_vision(self, image_id: int) -> Vision | None:
        return self._one(Vision, image_id)

    def get_checks(self, image_id: int) -> list[ImageCheck]:
        with self.catalog.session() as session:
            return list(session.scalars(
                select(ImageCheck)
                .where(ImageCheck.image_id == image_id, ImageCheck.tenant_id == self.tenant_id)
                .order_by(ImageCheck.check_name)))

    def tag_counts(self) -> list[tuple[str, int]]:
        with self.catalog.session() as session:
            rows = session.execute(
                select(ImageTag.tag, func.count()).where(ImageTag.tenant_id == self.tenant_id)
                .group_by(ImageTag.tag).order_by(func.count().desc(), ImageTag.tag))
            return [(tag, count) for tag, count in rows]

    def get_thumbnail(self, image_id: int) -> Thumbnail | None:
        return self._one(Thumbnail, image_id)

    def get_stages(self, image_id: int) -> list[ImageStage]:
        with self.catalog.session() as session:
            return list(session.scalars(
                select(ImageStage)
                .where(ImageStage.image_id == image_id, ImageStage.tenant_id == self.tenant_id)
                .order_by(ImageStage.stage)
            ))
