"""The catalog's only entry point.

`Catalog` holds what the pipeline needs across tenants (it processes images by id) and the key checks;
`TenantCatalog` is what the API gets after authentication: each of its queries filters on its tenant, so a
route cannot read another tenant's rows by forgetting a WHERE clause.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterable, Sequence

from sqlalchemy import Engine, case, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from imago_pipeline.core.catalog.db import make_engine, migrate
from imago_pipeline.core.catalog import search
from imago_pipeline.core.catalog.models import (
    ApiKey,
    AuditEvent,
    Base,
    Classification,
    Exif,
    Feedback,
    Image,
    ImageCheck,
    ImageStage,
    ImageTag,
    InferenceLog,
    Ocr,
    Tenant,
    Thumbnail,
    Vision,
    utcnow,
)

KEY_PREFIX = "imk_"
CLAIMABLE = ("pending", "requeued")  # waiting for the upload sensor
IN_PROGRESS = ("queued", "processing")  # taken into work, not finished
ALL_SCOPES = ("images:read", "images:write", "images:delete", "ai:use", "admin")
DEFAULT_SCOPES = ["images:read", "images:write", "ai:use"]


class ClientExists(ValueError):
    pass


def hash_api_key(raw_key: str) -> str:
    # Keys are 256-bit random, so a plain SHA-256 is enough: there is nothing to brute-force.
    return hashlib.sha256(raw_key.encode()).hexdigest()


@dataclass(frozen=True)
class Principal:
    """Who is calling: the tenant (client), its plan and quota, and the scopes of the key used."""

    tenant_id: int | None  # None only for the operator's key from IMAGO_ADMIN_API_KEY (no tenant of its own)
    tenant_name: str
    scopes: tuple[str, ...]
    plan: str = "free"
    quota_bytes: int | None = None  # the client's own quota; None means its plan's
    key_id: int | None = None  # the key used (None for the operator's key from the environment)


@dataclass(frozen=True)
class StageOutcome:
    image_id: int
    tenant_id: int
    status: str  # "done" | "failed"
    error: str | None = None
    duration_ms: float | None = None


@dataclass(frozen=True)
class CheckOutcome:
    image_id: int
    tenant_id: int
    passed: bool
    detail: str | None = None


@dataclass(frozen=True)
class ImageFilters:
    status: str | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None
    camera_make: str | None = None
    text_query: str | None = None
    dead_letter: bool | None = None


class Catalog:
    def __init__(self, engine: Engine, *, migrated: bool = True):
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self._migrated = migrated

    @classmethod
    def connect(cls, url: str) -> "Catalog":
        engine = make_engine(url)
        migrate(engine)
        return cls(engine)

    @classmethod
    def open(cls, url: str) -> "Catalog":
        """A catalog that connects (and migrates) on first use: a service can start while the database is
        down, report itself unhealthy, and work as soon as the database is back."""
        return cls(make_engine(url), migrated=False)

    def session(self) -> Session:
        if not self._migrated:
            migrate(self.engine)
            self._migrated = True
        return self._sessions()

    def dispose(self) -> None:
        self.engine.dispose()

    # tenants and keys -------------------------------------------------------------------------------

    def client_by_name(self, name: str) -> Tenant | None:
        with self.session() as session:
            return session.scalar(select(Tenant).where(Tenant.name == name))

    def get_or_create_tenant(self, name: str, scopes: Sequence[str] = DEFAULT_SCOPES) -> Tenant:
        tenant = self.client_by_name(name)
        if tenant is not None:
            return tenant
        try:
            return self.create_client(name, scopes=scopes)
        except ClientExists:  # created concurrently
            return self.client_by_name(name)

    def create_client(self, name: str, *, scopes: Sequence[str] = DEFAULT_SCOPES, plan: str = "free",
                      quota_bytes: int | None = None) -> Tenant:
        unknown = set(scopes) - set(ALL_SCOPES)
        if unknown:
            raise ValueError(f"unknown scopes: {', '.join(sorted(unknown))}")
        tenant = Tenant(name=name, scopes=sorted(set(scopes)), plan=plan, quota_bytes=quota_bytes)
        with self.session() as session:
            session.add(tenant)
            try:
                session.commit()
            except IntegrityError as exc:
                raise ClientExists(f"a client named {name!r} exists") from exc
            return tenant

    def list_clients(self, *, include_disabled: bool = False) -> list[Tenant]:
        query = select(Tenant).order_by(Tenant.id)
        if not include_disabled:
            query = query.where(Tenant.disabled_at.is_(None))
        with self.session() as session:
            return list(session.scalars(query))

    def get_client(self, tenant_id: int) -> Tenant | None:
        with self.session() as session:
            return session.get(Tenant, tenant_id)

    def update_client(self, tenant_id: int, **changes: Any) -> Tenant | None:
        """Change plan, scopes, quota_bytes or name; a key's narrower scopes stay within the new ones."""
        if "scopes" in changes:
            unknown = set(changes["scopes"]) - set(ALL_SCOPES)
            if unknown:
                raise ValueError(f"unknown scopes: {', '.join(sorted(unknown))}")
            changes["scopes"] = sorted(set(changes["scopes"]))
        with self.session() as session:
            tenant = session.get(Tenant, tenant_id)
            if tenant is None or tenant.disabled_at is not None:
                return None
            for field, value in changes.items():
                setattr(tenant, field, value)
            try:
                session.commit()
            except IntegrityError as exc:
                raise ClientExists(f"a client named {changes.get('name')!r} exists") from exc
            return tenant

    def disable_client(self, tenant_id: int) -> Tenant | None:
        """Soft delete: the client and every key stop working; its images stay until erased."""
        now = utcnow()
        with self.session() as session:
            tenant = session.get(Tenant, tenant_id)
            if tenant is None or tenant.disabled_at is not None:
                return None
            tenant.disabled_at = now
            session.execute(update(ApiKey).where(ApiKey.tenant_id == tenant_id, ApiKey.revoked_at.is_(None))
                            .values(revoked_at=now))
            session.commit()
            return tenant

    def issue_api_key(self, tenant_id: int, scopes: Sequence[str] | None = None) -> str:
        """Create a key and return it: the only time the raw key exists outside the caller.

        `scopes=None` gives the key all of its client's scopes, now and after a change; a list narrows it.
        """
        raw_key = KEY_PREFIX + secrets.token_urlsafe(32)
        with self.session() as session:
            tenant = session.get(Tenant, tenant_id)
            if tenant is None:
                raise ValueError(f"no client {tenant_id}")
            if scopes is not None and not set(scopes) <= set(tenant.scopes):
                extra = ", ".join(sorted(set(scopes) - set(tenant.scopes)))
                raise ValueError(f"client {tenant.name!r} does not have the scopes {extra}")
            session.add(ApiKey(tenant_id=tenant_id, prefix=raw_key[:12], key_hash=hash_api_key(raw_key),
                               scopes=None if scopes is None else sorted(set(scopes))))
            session.commit()
        return raw_key

    def rotate_key(self, tenant_id: int) -> str | None:
        """Revoke every key of the client and issue one new key with all its scopes."""
        with self.session() as session:
            tenant = session.get(Tenant, tenant_id)
            if tenant is None or tenant.disabled_at is not None:
                return None
            session.execute(update(ApiKey).where(ApiKey.tenant_id == tenant_id, ApiKey.revoked_at.is_(None))
                            .values(revoked_at=utcnow()))
            session.commit()
        return self.issue_api_key(tenant_id)

    def active_key_counts(self) -> dict[int, int]:
        with self.session() as session:
            rows = session.execute(select(ApiKey.tenant_id, func.count()).where(ApiKey.revoked_at.is_(None))
                                   .group_by(ApiKey.tenant_id))
            return {tenant_id: count for tenant_id, count in rows}

    def authenticate(self, raw_key: str | None) -> Principal | None:
        if not raw_key or not raw_key.startswith(KEY_PREFIX):
            return None
        with self.session() as session:
            row = session.execute(
                select(ApiKey, Tenant)
                .join(Tenant, Tenant.id == ApiKey.tenant_id)
                .where(ApiKey.prefix == raw_key[:12], ApiKey.revoked_at.is_(None), Tenant.disabled_at.is_(None))
            ).all()
        digest = hash_api_key(raw_key)
        for key, tenant in row:
            if secrets.compare_digest(key.key_hash, digest):
                scopes = [s for s in tenant.scopes if key.scopes is None or s in key.scopes]
                return Principal(tenant_id=tenant.id, tenant_name=tenant.name, scopes=tuple(scopes),
                                 plan=tenant.plan, quota_bytes=tenant.quota_bytes, key_id=key.id)
        return None

    def key_is_active(self, key_id: int, tenant_id: int) -> bool:
        """The key exists, belongs to the tenant, is not revoked, and its client is not disabled."""
        with self.session() as session:
            return session.execute(
                select(ApiKey.id).join(Tenant, Tenant.id == ApiKey.tenant_id)
                .where(ApiKey.id == key_id, ApiKey.tenant_id == tenant_id, ApiKey.revoked_at.is_(None),
                       Tenant.disabled_at.is_(None))).first() is not None

    def audit(self, action: str, *, tenant_id: int | None, detail: dict[str, Any]) -> None:
        with self.session() as session:
            session.add(AuditEvent(action=action, tenant_id=tenant_id, detail=detail))
            session.commit()

    def scrub(self) -> None:
        """After an erasure on SQLite, leave nothing of the deleted rows in the database files: merge the
        full-text index (a delete only marks its words deleted), then checkpoint the write-ahead log into
        the database (whose freed pages `secure_delete` zeroed) and truncate it. Postgres reuses dead rows'
        space once autovacuum has run."""
        if self.engine.dialect.name != "sqlite":
            return
        with self.engine.connect() as connection:
            connection.exec_driver_sql("INSERT INTO image_search(image_search) VALUES('optimize')")
            connection.commit()
            for _ in range(50):  # a reader in another process can hold the log for a moment
                busy, _log, _done = connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").one()
                if not busy:
                    return
                time.sleep(0.1)

    def for_tenant(self, tenant_id: int) -> "TenantCatalog":
        return TenantCatalog(self, tenant_id)

    # pipeline side ----------------------------------------------------------------------------------

    def ids_with_status(self, *statuses: str, limit: int = 1000) -> list[int]:
        """Image ids in these statuses, oldest first (tests and operators; the sensor claims, see take_work)."""
        with self.session() as session:
            return list(session.scalars(select(Image.id).where(Image.status.in_(statuses)).order_by(Image.id)
                                        .limit(limit)))

    def take_work(self, limit: int, claim: str) -> list[tuple[int, str, tuple[str, ...] | None]]:
        """Take up to `limit` pending or requeued images into work under `claim` (so commit order cannot hide
        an image, and two takers never get the same one). New uploads come first, oldest first, then
        reprocessing requests. Returns [(image_id, status it had, stages to redo or None for all)]."""
        waiting = (select(Image.id, Image.status, Image.requeue_stages).where(Image.status.in_(CLAIMABLE))
                   .order_by(case((Image.status == "pending", 0), else_=1), Image.updated_at, Image.id).limit(limit))
        if self.engine.dialect.name == "postgresql":
            waiting = waiting.with_for_update(skip_locked=True)
        with self.session() as session:
            found = session.execute(waiting).all()
            taken = {row[0] for row in session.execute(
                update(Image).where(Image.id.in_([row[0] for row in found]), Image.status.in_(CLAIMABLE))
                .values(status="queued", claim=claim, claimed_at=utcnow()).returning(Image.id))}
            session.commit()
        return sorted((image_id, status, tuple(stages) if stages else None)
                      for image_id, status, stages in found if image_id in taken)

    def assign_claims(self, taken_as: str, claims: dict[str, Sequence[int]]) -> None:
        """Give each batch of images taken under `taken_as` the claim token of the run that will process it."""
        with self.session() as session:
            for claim, image_ids in claims.items():
                session.execute(update(Image).where(Image.id.in_(list(image_ids)), Image.claim == taken_as)
                                .values(claim=claim))
            session.commit()

    def claim_images(self, image_ids: Sequence[int], claim: str, *, owner: str | None = None) -> list[int]:
        """Claim these images for an in-process run: any that nobody holds, or that `owner` (the process that
        registered them) holds. Images another worker holds are left out; returns those claimed."""
        free = Image.status.in_((*CLAIMABLE, "done", "failed")) | Image.claim.is_(None)
        if owner:
            free = free | (Image.claim == owner)
        with self.session() as session:
            rows = session.execute(
                update(Image).where(Image.id.in_(list(image_ids)), free)
                .values(status="queued", claim=claim, claimed_at=utcnow()).returning(Image.id)).all()
            session.commit()
        return sorted(row[0] for row in rows)

    def in_progress_images(self, *, claimed_before: datetime) -> list[tuple[int, str | None, int, dict[str, str]]]:
        """Images taken into work before `claimed_before` and not finished: (id, claim, attempts, {stage:
        status})."""
        taken = func.coalesce(Image.claimed_at, Image.updated_at)
        with self.session() as session:
            images = session.execute(select(Image.id, Image.claim, Image.attempts)
                                     .where(Image.status.in_(IN_PROGRESS), taken < claimed_before)
                                     .order_by(Image.id)).all()
            stages: dict[int, dict[str, str]] = {}
            for chunk in _chunks([i for i, _, _ in images], 500):
                for image_id, stage, status in session.execute(
                        select(ImageStage.image_id, ImageStage.stage, ImageStage.status)
                        .where(ImageStage.image_id.in_(chunk))):
                    stages.setdefault(image_id, {})[stage] = status
        return [(i, claim, attempts or 0, stages.get(i, {})) for i, claim, attempts in images]

    def requeue_stranded(self, requeued: dict[int, tuple[str, ...]], dead_lettered: Sequence[int]) -> None:
        """Images whose worker is gone: back to the queue with the stages still to do (one attempt more), or
        failed for good when their retries ran out."""
        now = utcnow()
        with self.session() as session:
            for image in session.scalars(select(Image).where(Image.id.in_([*requeued, *dead_lettered]),
                                                             Image.status.in_(IN_PROGRESS))):
                image.attempts = (image.attempts or 0) + 1
                image.claim = image.claimed_at = None
                image.updated_at = now
                if image.id in requeued:
                    image.status, image.requeue_stages = "requeued", list(requeued[image.id])
                else:
                    image.status, image.gave_up_at = "failed", now
                    image.error = (f"stranded: the runs that took it ended without finishing it "
                                   f"{image.attempts} times")
            session.commit()

    def requeue(self, stages_by_image: dict[int, tuple[str, ...] | None], *,
                retries: dict[int, datetime] | None = None, for_sensor: bool = True) -> None:
        """Queue images again for the upload sensor, each with the stages to redo (None: every stage).

        `retries` marks automatic retries of failed images: {image_id: earliest next retry}; it counts the
        attempt. With `for_sensor=False` only the retries are recorded (the caller runs the images itself).
        """
        now, retries = utcnow(), retries or {}
        with self.session() as session:
            for image in session.scalars(select(Image).where(Image.id.in_(list(stages_by_image)))):
                if for_sensor:
                    stages = stages_by_image[image.id]
                    image.status, image.updated_at = "requeued", now
                    image.requeue_stages = list(stages) if stages else None
                if image.id in retries:
                    image.attempts = (image.attempts or 0) + 1
                    image.next_attempt_at = retries[image.id]
            session.commit()

    def dead_letter(self, image_ids: Sequence[int]) -> None:
        """Stop retrying these failed images: they stay failed with their reason."""
        with self.session() as session:
            session.execute(update(Image).where(Image.id.in_(list(image_ids)), Image.gave_up_at.is_(None))
                            .values(gave_up_at=utcnow()))
            session.commit()

    def failed_images(self, *, tenant_id: int | None = None, created_from: datetime | None = None,
                      created_to: datetime | None = None) -> list[tuple[Image, list[str]]]:
        """Failed images not dead-lettered yet, oldest first, with the stages that failed."""
        query = select(Image).where(Image.status == "failed", Image.gave_up_at.is_(None))
        if tenant_id is not None:
            query = query.where(Image.tenant_id == tenant_id)
        if created_from is not None:
            query = query.where(Image.created_at >= created_from)
        if created_to is not None:
            query = query.where(Image.created_at < created_to)
        with self.session() as session:
            images = list(session.scalars(query.order_by(Image.created_at, Image.id)))
            failed: dict[int, list[str]] = {}
            for image_id, stage in session.execute(
                    select(ImageStage.image_id, ImageStage.stage)
                    .where(ImageStage.image_id.in_([i.id for i in images]), ImageStage.status == "failed")):
                failed.setdefault(image_id, []).append(stage)
        return [(image, sorted(failed.get(image.id, []))) for image in images]

    def images_by_id(self, image_ids: Iterable[int]) -> dict[int, Image]:
        ids = list(image_ids)
        with self.session() as session:
            return {image.id: image for image in session.scalars(select(Image).where(Image.id.in_(ids)))}

    def save_stage(self, stage: str, outcomes: Sequence[StageOutcome], table: type[Base] | None = None,
                   rows: Sequence[dict[str, Any]] = (), run_id: str | None = None,
                   code_version: str | None = None) -> None:
        """Replace a batch's enrichment rows (in `table`) and per-image stage status, in one transaction.

        Bulk delete-then-insert: re-processing an image replaces its rows, and a batch costs a handful of
        statements instead of a round trip per image.
        """
        ids = [o.image_id for o in outcomes]
        now = utcnow()
        with self.session() as session:
            if table is not None:
                session.execute(delete(table).where(table.image_id.in_(ids)))
                if rows:
                    session.execute(insert(table), list(rows))
            session.execute(delete(ImageStage).where(ImageStage.image_id.in_(ids), ImageStage.stage == stage))
            if outcomes:
                session.execute(insert(ImageStage), [
                    dict(image_id=o.image_id, tenant_id=o.tenant_id, stage=stage, status=o.status, error=o.error,
                         duration_ms=o.duration_ms, run_id=run_id, code_version=code_version, updated_at=now)
                    for o in outcomes])
            session.commit()

    def save_checks(self, check_name: str, results: Sequence[CheckOutcome]) -> None:
        """The latest result of a per-image check, replacing the previous one."""
        if not results:
            return
        now = utcnow()
        with self.session() as session:
            session.execute(delete(ImageCheck).where(ImageCheck.check_name == check_name,
                                                     ImageCheck.image_id.in_([r.image_id for r in results])))
            session.execute(insert(ImageCheck), [
                dict(image_id=r.image_id, tenant_id=r.tenant_id, check_name=check_name, passed=r.passed,
                     detail=r.detail, updated_at=now) for r in results])
            session.commit()

    def save_tags(self, tags_by_image: dict[int, tuple[int, list[str]]]) -> None:
        """Replace the tags of these images: {image_id: (tenant_id, tags)}."""
        if not tags_by_image:
            return
        with self.session() as session:
            session.execute(delete(ImageTag).where(ImageTag.image_id.in_(list(tags_by_image))))
            rows = [dict(image_id=i, tenant_id=t, tag=tag) for i, (t, tags) in tags_by_image.items()
                    for tag in dict.fromkeys(tags)]
            if rows:
                session.execute(insert(ImageTag), rows)
            session.commit()

    def refresh_search(self, image_ids: Sequence[int]) -> None:
        """Re-index what was read in these images: OCR text, vision description and tags."""
        ids = list(image_ids)
        with self.session() as session:
            images = dict(session.execute(select(Image.id, Image.tenant_id).where(Image.id.in_(ids))).all())
            ocr = dict(session.execute(select(Ocr.image_id, Ocr.text).where(Ocr.image_id.in_(ids))).all())
            vision = {row.image_id: row for row in session.scalars(select(Vision).where(Vision.image_id.in_(ids)))}
            documents = []
            for image_id, tenant_id in images.items():
                parts = [ocr.get(image_id) or ""]
                if image_id in vision:
                    parts += [vision[image_id].description, " ".join(vision[image_id].tags or [])]
                documents.append((image_id, tenant_id, "\n".join(p for p in parts if p)))
            search.replace_documents(session, documents)
            session.commit()

    def log_inference(self, *, tenant_id: int | None, success: bool, latency_ms: float, model_version: str | None,
                      label: str | None = None, error: str | None = None) -> None:
        with self.session() as session:
            session.add(InferenceLog(tenant_id=tenant_id, success=success, latency_ms=latency_ms,
                                     model_version=model_version, label=label, error=(error or None) and error[:200]))
            session.commit()

    def feedback_for_training(self, since_id: int = 0) -> list[tuple[Feedback, Image]]:
        """Labelled feedback not yet used by a model, with its image (oldest first)."""
        with self.session() as session:
            rows = session.execute(
                select(Feedback, Image).join(Image, Image.id == Feedback.image_id)
                .where(Feedback.label.is_not(None), Feedback.used_in_version.is_(None), Feedback.id > since_id)
                .order_by(Feedback.id)).all()
            return [(f, i) for f, i in rows]

    def mark_feedback_used(self, feedback_ids: Sequence[int], version: str) -> None:
        with self.session() as session:
            session.execute(update(Feedback).where(Feedback.id.in_(list(feedback_ids))).values(used_in_version=version))
            session.commit()

    def agreement_by_model(self) -> dict[str, tuple[int, int]]:
        """{model_version: (feedback items, items saying the prediction was right)}."""
        with self.session() as session:
            rows = session.execute(select(Feedback.model_version, func.count(),
                                          func.sum(case((Feedback.correct, 1), else_=0)))
                                   .where(Feedback.model_version.is_not(None)).group_by(Feedback.model_version))
            return {version: (int(total), int(agreed or 0)) for version, total, agreed in rows}

    def stage_statistics(self) -> list[tuple[str, str, int, float | None]]:
        """[(stage, status, images, summed duration in ms)] over the latest result of every image's stages."""
        with self.session() as session:
            return [tuple(row) for row in session.execute(
                select(ImageStage.stage, ImageStage.status, func.count(), func.sum(ImageStage.duration_ms))
                .group_by(ImageStage.stage, ImageStage.status).order_by(ImageStage.stage, ImageStage.status))]

    def stage_versions(self, stages: Sequence[str]) -> dict[int, dict[str, tuple[str, str | None]]]:
        """{image_id: {stage: (status, code_version)}} for every finished image (done or failed)."""
        with self.session() as session:
            ids = select(Image.id).where(Image.status.in_(["done", "failed"]))  # not those in work
            result: dict[int, dict[str, tuple[str, str | None]]] = {i: {} for i in session.scalars(ids)}
            rows = session.execute(select(ImageStage.image_id, ImageStage.stage, ImageStage.status,
                                          ImageStage.code_version).where(ImageStage.stage.in_(list(stages))))
            for image_id, stage, status, version in rows:
                if image_id in result:
                    result[image_id][stage] = (status, version)
            return result

    def finish_images(self, image_ids: Sequence[int], stages: Sequence[str], *,
                      claim: str | None = None) -> dict[int, Image]:
        """Set each image's overall status from its stages: failed if any failed, done if all are done.

        A run finishes only the images it holds (`claim`) or that nobody holds: an image taken again by
        another run since (a new reprocessing request) is that run's to finish."""
        with self.session() as session:
            images = {i.id: i for i in session.scalars(select(Image).where(Image.id.in_(list(image_ids))))
                      if i.claim is None or i.claim == claim}
            stage_rows = session.scalars(
                select(ImageStage).where(ImageStage.image_id.in_(list(images)), ImageStage.stage.in_(list(stages)))
            )
            by_image: dict[int, dict[str, ImageStage]] = {}
            for row in stage_rows:
                by_image.setdefault(row.image_id, {})[row.stage] = row
            now = utcnow()
            for image_id, image in images.items():
                done = by_image.get(image_id, {})
                failures = [f"{s}: {done[s].error}" for s in stages if s in done and done[s].status == "failed"]
                if failures:
                    image.status, image.error = "failed", "; ".join(failures)
                elif all(s in done and done[s].status == "done" for s in stages):
                    image.status, image.error = "done", None
                else:
                    image.status = "processing"
                image.processed_at, image.requeue_stages = now, None
                if image.status != "processing":  # finished: nobody holds it any more
                    image.claim = image.claimed_at = None
            session.commit()
            return images


def _chunks(items: list, size: int):
    for start in range(0, len(items), size):
        yield items[start:start + size]


class TenantCatalog:
    """Catalog reads and writes for one tenant; every statement filters on `tenant_id`."""

    def __init__(self, catalog: Catalog, tenant_id: int):
        self.catalog = catalog
        self.tenant_id = tenant_id

    def register_image(self, *, sha256: str, original_name: str, media_type: str, byte_size: int, width: int,
                       height: int, blob_key: str, status: str = "pending") -> tuple[Image, bool]:
        """Insert an image, or return the tenant's existing image with the same content.

        `pending` images are picked up by the upload sensor; `queued` ones by whoever registered them.
        """
        with self.catalog.session() as session:
            existing = session.scalar(select(Image).where(Image.tenant_id == self.tenant_id, Image.sha256 == sha256))
            if existing is not None:
                return existing, False
            image = Image(tenant_id=self.tenant_id, sha256=sha256, original_name=original_name,
                          media_type=media_type, byte_size=byte_size, width=width, height=height,
                          blob_key=blob_key, status=status)
            session.add(image)
            try:
                session.commit()
            except IntegrityError:  # the same bytes uploaded concurrently
                session.rollback()
                existing = session.scalars(
                    select(Image).where(Image.tenant_id == self.tenant_id, Image.sha256 == sha256)).one()
                return existing, False
            return image, True

    def register_images(self, items: Sequence[dict[str, Any]]) -> list[tuple[Image, bool]]:
        """`register_image` for many uploads in one transaction (bulk ingest); same order as `items`."""
        shas = list(dict.fromkeys(item["sha256"] for item in items))
        with self.catalog.session() as session:
            known = {i.sha256: i for i in session.scalars(
                select(Image).where(Image.tenant_id == self.tenant_id, Image.sha256.in_(shas)))}
            new = {}
            for item in items:
                if item["sha256"] not in known and item["sha256"] not in new:
                    new[item["sha256"]] = Image(tenant_id=self.tenant_id, **item)
            session.add_all(new.values())
            session.commit()
        seen: set[str] = set()
        results = []
        for item in items:
            sha = item["sha256"]
            created = sha in new and sha not in seen
            seen.add(sha)
            results.append((new.get(sha) or known[sha], created))
        return results

    def get_image(self, image_id: int) -> Image | None:
        with self.catalog.session() as session:
            return session.scalar(select(Image).where(Image.id == image_id, Image.tenant_id == self.tenant_id))

    def find_by_sha256(self, sha256: str) -> Image | None:
        with self.catalog.session() as session:
            return session.scalar(select(Image).where(Image.tenant_id == self.tenant_id, Image.sha256 == sha256))

    def storage_used(self) -> tuple[int, int]:
        """(bytes of originals, images) held by the tenant: what the storage quota counts."""
        with self.catalog.session() as session:
            count, total = session.execute(select(func.count(), func.coalesce(func.sum(Image.byte_size), 0))
                                           .where(Image.tenant_id == self.tenant_id)).one()
            return int(total), int(count)

    def request_reprocess(self, image_id: int) -> Image | None:
        """Queue the image for the upload sensor again (every stage is redone)."""
        with self.catalog.session() as session:
            image = session.scalar(select(Image).where(Image.id == image_id, Image.tenant_id == self.tenant_id))
            if image is None:
                return None
            image.status, image.error, image.updated_at = "requeued", None, utcnow()
            # a person asked: every stage, and automatic retries start over (also for a dead letter)
            image.requeue_stages, image.attempts, image.next_attempt_at, image.gave_up_at = None, 0, None, None
            session.commit()
            return image

    def delete_image(self, image_id: int) -> dict[str, int] | None:
        """Delete the image's catalog rows (every table, and the search index) in one transaction.

        Returns {table: rows deleted}, or None when the tenant has no such image.
        """
        tables = [ImageStage, ImageCheck, Exif, Thumbnail, Ocr, Vision, ImageTag, Classification, Feedback]
        counts: dict[str, int] = {}
        with self.catalog.session() as session:
            image = session.scalar(select(Image).where(Image.id == image_id, Image.tenant_id == self.tenant_id))
            if image is None:
                return None
            for table in tables:  # explicit, not only ON DELETE CASCADE: the counts go to the audit log
                result = session.execute(delete(table).where(table.image_id == image_id,
                                                             table.tenant_id == self.tenant_id))
                counts[table.__tablename__] = result.rowcount
            search.delete_documents(session, [image_id])
            session.delete(image)
            counts["images"] = 1
            session.commit()
        self.catalog.scrub()
        return counts

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
        if filters.camera_make:
            query = query.join(Exif, Exif.image_id == Image.id).where(
                Exif.tenant_id == self.tenant_id, func.lower(Exif.make) == filters.camera_make.lower())
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

    def add_feedback(self, image_id: int, *, correct: bool, label: str | None) -> Feedback:
        """Record a verdict on the image's current classification; the true label is derived when implied."""
        predicted = self.get_classification(image_id)
        true_label = label
        if true_label is None and predicted is not None:
            true_label = predicted.label if correct else ("dog" if predicted.label == "cat" else "cat")
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
