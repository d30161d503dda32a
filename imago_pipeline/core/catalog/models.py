"""Catalog tables. Every row carries `tenant_id`, so every read can be tenant-scoped."""

from __future__ import annotations

import uuid as uuid_module
from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_uuid() -> str:
    return str(uuid_module.uuid4())


class UTCDateTime(TypeDecorator):
    """Timezone-aware UTC in and out, also on SQLite (which stores no offset)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value, dialect):
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    pass


class Tenant(Base):
    """An API client (the API calls it a client): owns images and keys; its plan sets the rate limit and the
    default storage quota, its scopes bound what any of its keys may do."""

    __tablename__ = "tenants"
    __table_args__ = {"sqlite_autoincrement": True}  # an id is never given twice (SQLite reuses the largest)  # noqa: RUF012  (SQLAlchemy reads __table_args__ as a class attribute)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    plan: Mapped[str] = mapped_column(String(32), default="free")
    scopes: Mapped[list[str]] = mapped_column(JSON, default=list)
    quota_bytes: Mapped[int | None] = mapped_column(BigInteger)  # None: the plan's quota
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime, onupdate=utcnow)
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ApiKey(Base):
    """Only a SHA-256 of the key is kept; the prefix finds the row without scanning hashes."""

    __tablename__ = "api_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    prefix: Mapped[str] = mapped_column(String(16), index=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scopes: Mapped[list[str] | None] = mapped_column(JSON)  # None: all of the client's scopes; else a subset
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Image(Base):
    __tablename__ = "images"
    __table_args__ = (
        UniqueConstraint("tenant_id", "sha256", name="uq_images_tenant_sha256"),
        Index("ix_images_tenant_created", "tenant_id", "created_at"),
        Index("ix_images_status", "status"),
        {"sqlite_autoincrement": True},  # an erased image's id is never given to another upload
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # The id the original service's clients know an image by (stable, not guessable, never reused)
    uuid: Mapped[str] = mapped_column(String(36), default=new_uuid, unique=True, index=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    sha256: Mapped[str] = mapped_column(String(64))
    original_name: Mapped[str] = mapped_column(String(255))
    media_type: Mapped[str] = mapped_column(String(64))
    byte_size: Mapped[int] = mapped_column(BigInteger)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    blob_key: Mapped[str] = mapped_column(String(512))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    processed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)  # the current attempt taken into work
    # Reprocessing: which stages a `requeued` image redoes (None: all), and the automatic retries of a failed
    # image (the nightly batch); past the limit it is dead-lettered: it stays failed, with its reason.
    requeue_stages: Mapped[list[str] | None] = mapped_column(JSON)
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    gave_up_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Work in progress: the claim token of the run (or the in-process owner) that took the image, and when.
    # Cleared when the image is done or failed; a claim whose run is gone is reconciled (`claims.py`).
    claim: Mapped[str | None] = mapped_column(String(120))
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Who goes first: an API upload has its client's plan priority, bulk work (drops, ingest, background
    # reprocessing) 0. The upload sensor takes higher priorities first, each lane in runs of its own.
    priority: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class ImageStage(Base):
    """Status of one enrichment stage (exif, thumbnail, …) for one image."""

    __tablename__ = "image_stages"

    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), primary_key=True)
    stage: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    status: Mapped[str] = mapped_column(String(16))
    error: Mapped[str | None] = mapped_column(Text)
    duration_ms: Mapped[float | None] = mapped_column(Float)
    run_id: Mapped[str | None] = mapped_column(String(64))
    code_version: Mapped[str | None] = mapped_column(String(200))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class ImageCheck(Base):
    """The latest result of one data-quality check (an asset check) for one image."""

    __tablename__ = "image_checks"

    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), primary_key=True)
    check_name: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    passed: Mapped[bool] = mapped_column(Boolean)
    detail: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class Exif(Base):
    __tablename__ = "exif"

    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    make: Mapped[str | None] = mapped_column(String(128))
    model: Mapped[str | None] = mapped_column(String(128))
    lens_model: Mapped[str | None] = mapped_column(String(128))
    datetime_original: Mapped[str | None] = mapped_column(String(40))
    exposure_time: Mapped[float | None] = mapped_column(Float)
    f_number: Mapped[float | None] = mapped_column(Float)
    iso: Mapped[int | None] = mapped_column(Integer)
    focal_length_mm: Mapped[float | None] = mapped_column(Float)
    focal_length_35mm: Mapped[int | None] = mapped_column(Integer)
    orientation: Mapped[int | None] = mapped_column(Integer)
    width: Mapped[int | None] = mapped_column(Integer)
    height: Mapped[int | None] = mapped_column(Integer)
    gps_latitude: Mapped[float | None] = mapped_column(Float)
    gps_longitude: Mapped[float | None] = mapped_column(Float)
    gps_altitude: Mapped[float | None] = mapped_column(Float)
    software: Mapped[str | None] = mapped_column(String(255))
    # Derived from the GPS position and the clock, offline (`enrichment/places.py`)
    city: Mapped[str | None] = mapped_column(String(128))
    admin1: Mapped[str | None] = mapped_column(String(128))
    country_code: Mapped[str | None] = mapped_column(String(2), index=True)
    timezone: Mapped[str | None] = mapped_column(String(64))
    datetime_utc: Mapped[str | None] = mapped_column(String(40))
    extracted_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Thumbnail(Base):
    __tablename__ = "thumbnails"

    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    blob_key: Mapped[str] = mapped_column(String(512))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    byte_size: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Ocr(Base):
    __tablename__ = "ocr"

    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    text: Mapped[str] = mapped_column(Text, default="")
    confidence: Mapped[float | None] = mapped_column(Float)
    language: Mapped[str | None] = mapped_column(String(8))
    has_text: Mapped[bool] = mapped_column(Boolean)
    words: Mapped[list] = mapped_column(JSON, default=list)  # [{text, confidence, left, top, width, height}]
    rotation: Mapped[int] = mapped_column(Integer, default=0)
    mode: Mapped[str] = mapped_column(String(8))  # page | line | scene (a photo with text) | probe
    engine: Mapped[str] = mapped_column(String(128))  # tesseract | rapidocr, or the vision model that read the text
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Vision(Base):
    __tablename__ = "vision"

    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    description: Mapped[str] = mapped_column(Text)
    tags: Mapped[list] = mapped_column(JSON, default=list)
    confidence: Mapped[float | None] = mapped_column(Float)
    model_used: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ImageTag(Base):
    """One row per (image, tag), so tag counts are a GROUP BY on any database."""

    __tablename__ = "image_tags"
    __table_args__ = (Index("ix_image_tags_tenant_tag", "tenant_id", "tag"),)

    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), primary_key=True)
    tag: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))



class ModelVersion(Base):
    """A trained classifier head: its metrics, card and data fingerprint here, its artifacts (the portable
    `.npz` it is served from, the `.keras` it was trained as) in the blob store."""

    __tablename__ = "model_versions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    version: Mapped[str] = mapped_column(String(64), unique=True)
    status: Mapped[str] = mapped_column(String(16), index=True)  # candidate | production | retired
    data_fingerprint: Mapped[str] = mapped_column(String(64))
    metrics: Mapped[dict] = mapped_column(JSON, default=dict)
    card: Mapped[dict] = mapped_column(JSON, default=dict)
    artifact_key: Mapped[str] = mapped_column(String(512))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    promoted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ImageEmbedding(Base):
    """The image's 1280-d embedding (float16 bytes), its top ImageNet classes and a 64×64 grey fingerprint:
    what classification, similar-image search, duplicate detection and the offline tags read."""

    __tablename__ = "embeddings"

    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    vector: Mapped[bytes] = mapped_column(LargeBinary)
    fingerprint: Mapped[bytes | None] = mapped_column(LargeBinary)  # 64×64 grey, for near-duplicates
    imagenet: Mapped[list] = mapped_column(JSON, default=list)  # [[class index, probability], …], best first
    model: Mapped[str] = mapped_column(String(200))  # the embedding's code version
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Classification(Base):
    __tablename__ = "classifications"

    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    label: Mapped[str] = mapped_column(String(16))  # cat | dog | other
    probability: Mapped[float] = mapped_column(Float)
    probabilities: Mapped[dict | None] = mapped_column(JSON)  # every label's probability
    model_version: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Feedback(Base):
    """A user's verdict on a classification; kept `feedback_retention_days`, then purged."""

    __tablename__ = "feedback"
    __table_args__ = (Index("ix_feedback_created", "created_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), index=True)
    correct: Mapped[bool] = mapped_column(Boolean)
    label: Mapped[str | None] = mapped_column(String(16))  # the true label, when the user gave one
    predicted_label: Mapped[str | None] = mapped_column(String(16))
    model_version: Mapped[str | None] = mapped_column(String(64))
    used_in_version: Mapped[str | None] = mapped_column(String(64))  # the model version it trained
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class AuditEvent(Base):
    """What an erasure or a retention purge removed: counts per store, never the erased content."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_log_created", "created_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    action: Mapped[str] = mapped_column(String(64))
    tenant_id: Mapped[int | None] = mapped_column(Integer)  # no foreign key: the audit outlives the tenant
    detail: Mapped[dict] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class PendingErasure(Base):
    """An erasure whose catalog rows are gone but whose files, lake rows or Dagster partition may not be
    yet: written with the catalog deletion, removed with the audit row when every store is done
    (`core/erasure.py`). It holds the image's ids and file key only until then."""

    __tablename__ = "pending_erasures"
    __table_args__ = (Index("ix_pending_erasures_image", "tenant_id", "image_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant_id: Mapped[int] = mapped_column(Integer)  # no foreign key: the tenant may go first
    image_id: Mapped[int] = mapped_column(Integer)
    image_uuid: Mapped[str] = mapped_column(String(36))  # a retried DELETE may name the image by uuid
    blob_key: Mapped[str] = mapped_column(String(512))
    catalog_rows: Mapped[int] = mapped_column(Integer)
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class InferenceLog(Base):
    """Metadata of one synchronous prediction; never the image."""

    __tablename__ = "inference_log"
    __table_args__ = (Index("ix_inference_log_created", "created_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant_id: Mapped[int | None] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"), index=True)
    success: Mapped[bool] = mapped_column(Boolean)
    error: Mapped[str | None] = mapped_column(String(200))
    latency_ms: Mapped[float] = mapped_column(Float)
    model_version: Mapped[str | None] = mapped_column(String(64))
    label: Mapped[str | None] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
