"""One place for every setting, read from `IMAGO_*` environment variables.

With nothing set, everything lives under `.imago/` in the working directory (the embedded default):
a SQLite catalog, a local blob folder, a local Parquet lake and a SQLite-backed DAGSTER_HOME.
"""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, BaseModel, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from imago_pipeline.core.limits import MAX_PIXELS, MAX_UPLOAD_BYTES, OCR_LANGUAGES, THUMBNAIL_SIZE


class Plan(BaseModel):
    """What a client's plan allows: requests (a `limits` string, e.g. "60/minute;1000/hour") and storage."""

    rate_limit: str
    quota_bytes: int | None  # None: unlimited
    priority: int = 10  # of its uploads' runs in the run queue (higher first); bulk work has 0


MIN_SECRET_CHARS = 32  # a signing secret or the operator's key (the secret made in the home has 64)

DEFAULT_PLANS = {
    "free": Plan(rate_limit="120/minute;3000/hour", quota_bytes=1 << 30, priority=10),
    "pro": Plan(rate_limit="600/minute", quota_bytes=100 << 30, priority=20),
    "enterprise": Plan(rate_limit="6000/minute", quota_bytes=None, priority=30),
}


class ImagoSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="IMAGO_", extra="ignore", validate_by_name=True,
                                      hide_input_in_errors=True)  # a refused secret is not printed

    home: Path = Field(default=Path(".imago"), description="Root of every local store.")
    database_url: str | None = Field(
        default=None,
        description="Catalog URL; default sqlite:///<home>/catalog.db. Use postgresql+psycopg2://… for Postgres.",
    )
    blob_dir: Path | None = None
    blob_backend: Literal["local", "s3"] = Field(default="local", description="Where originals and thumbnails live.")
    s3_bucket: str = Field(default="imago", description="Bucket of the S3 blob store.")
    s3_prefix: str = Field(default="blobs/", description="Key prefix of the S3 blob store inside the bucket.")
    s3_endpoint_url: str | None = Field(default=None, description="S3-compatible endpoint (MinIO), e.g. http://minio:9000.")
    s3_region: str = "us-east-1"
    s3_access_key_id: str | None = None
    s3_secret_access_key: SecretStr | None = Field(default=None, repr=False)
    s3_drop_uri: str | None = Field(default=None, description="s3://bucket/prefix/ watched by the S3 drop sensor.")
    lake_dir: Path | None = None
    lake_uri: str | None = Field(default=None, pattern=r"^s3://[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9](/.*)?$",
                                 description="s3://bucket/prefix: the Parquet lake on S3 (the blob store's "
                                 "endpoint and credentials), reachable from every machine; unset, a folder.")
    drop_dir: Path | None = Field(default=None, description="Folder watched by the drop-folder sensor.")
    default_tenant: str = Field(default="default", description="Tenant that owns drop-folder and CLI ingests.")

    batch_size: int = Field(default=100, ge=1, description="Images per Dagster run.")
    workers: int = Field(default_factory=lambda: os.cpu_count() or 1, ge=1)
    partition_window_days: float = Field(
        default=7.0, ge=0, description="Images finished and unchanged for this many days leave Dagster's "
        "`images` partitions (their history stays in the event log, catalog and lake; a reprocess adds them "
        "back), so a run's cost does not grow with every image ever ingested. 0 keeps every partition.")
    executor: Literal["in_process", "celery"] = Field(
        default="in_process", description="Where a process_images run executes its steps: in its own process "
        "(its images spread over IMAGO_WORKERS processes), or on Celery workers (`imago worker`) of any "
        "machine reaching the broker, the catalog, Dagster's Postgres, S3 and the lake.")
    celery_broker_url: str = Field(default="pyamqp://guest:guest@127.0.0.1:5672//",
                                   description="The Celery broker of the distributed executor (RabbitMQ).")
    max_upload_bytes: int = MAX_UPLOAD_BYTES
    max_pixels: int = Field(default=MAX_PIXELS, description="Images with more pixels are refused before decoding.")
    thumbnail_size: int = THUMBNAIL_SIZE
    ocr_languages: str = Field(default=OCR_LANGUAGES, description="Tesseract languages, joined with '+'.")
    ocr_fallback_confidence: float = Field(
        default=60.0, description="Below this mean word confidence, a remote vision provider re-reads the text.")

    training_data: Path | None = Field(
        default=None, description="Base training set for retraining: a folder (cat/, dog/, other/) or a CSV manifest.")
    validation_data: Path | None = Field(
        default=None, description="Fixed validation set for the promotion gate (folder or CSV manifest).")
    retrain_min_feedback: int = Field(default=20, ge=1,
                                      description="New labelled feedback items that trigger a retrain.")
    promotion_margin: float = Field(
        default=0.01, description="Balanced accuracy a candidate must gain over production to be promoted.")
    train_epochs: int = Field(default=150, ge=1, description="Most epochs of head training (it stops early).")
    train_batch_size: int = Field(default=64, ge=1)
    train_hidden: int = Field(default=0, ge=0, description="Hidden units of the head (0: one softmax layer).")
    train_dropout: float = Field(default=0.3, ge=0.0, lt=1.0, description="Dropout on the embedding.")

    # Retention (GDPR) and nightly maintenance
    inference_log_retention_days: int = Field(default=180, ge=1, description="Days an inference log row is kept.")
    feedback_retention_days: int = Field(default=365, ge=1, description="Days a feedback row is kept.")
    reprocess_budget: int = Field(default=5000, ge=0, description="Images the nightly reprocessing may requeue.")
    reprocess_max_retries: int = Field(default=3, ge=0, description="Automatic retries of a failed image.")
    reprocess_backoff_s: int = Field(default=6 * 3600, ge=0,
                                     description="Wait before the first retry; doubled after each retry.")
    analytics_min_group_size: int = Field(
        default=5, ge=1, description="SQL models that describe image content (camera, label, language) leave "
        "out groups of fewer images, so no aggregate describes one image (or keeps one erased).")
    claim_grace_s: int = Field(default=120, ge=0, description="Age at which an image taken into work is checked: "
                               "if its run or process is gone, it is requeued with its unfinished stages.")

    vision_provider: Literal["local", "gemini", "openrouter"] = Field(
        default="local", validation_alias=AliasChoices("IMAGO_VISION_PROVIDER", "AI_PROVIDER"),
        description="Who describes images and powers /ai/*: local (offline), gemini or openrouter. AI_PROVIDER, "
                    "the original service's name for it, is read too.")
    gemini_model: str = "gemini-2.5-flash"
    gemini_api_key: str | None = Field(default=None, repr=False)
    gemini_base_url: str | None = Field(default=None, description="Override the API endpoint (tests, proxies).")
    openrouter_model: str = Field(default="google/gemini-2.5-flash",
                                  description="Any OpenRouter model that takes images and answers JSON.")
    openrouter_api_key: str | None = Field(default=None, repr=False)
    openrouter_base_url: str | None = Field(default=None, description="Override the API endpoint (tests, proxies).")
    vision_attempts: int = Field(default=4, ge=1, description="Tries per request on 429 and 5xx.")
    vision_initial_delay_s: float = 1.0
    # AI utility endpoints
    ai_fetch_max_bytes: int = Field(default=2 * 1024 * 1024, ge=1, description="Largest page /ai/summarize reads.")
    ai_fetch_timeout_s: float = Field(default=10.0, gt=0, description="Time for a whole fetch, redirects included.")
    ai_fetch_max_redirects: int = Field(default=3, ge=0, description="Redirects followed, each one checked again.")
    ai_fetch_allow_private: bool = Field(
        default=False, description="Let /ai/summarize reach private and loopback addresses (tests, intranets).")
    ai_text_max_chars: int = Field(default=100_000, ge=1, description="Page text past this is cut before summarising.")

    # API
    admin_api_key: SecretStr | None = Field(
        default=None, description="An operator key with only the `admin` scope (bootstrap, client management); "
        f"at least {MIN_SECRET_CHARS} characters (e.g. `openssl rand -base64 48`).")
    plans: dict[str, Plan] = Field(default_factory=lambda: dict(DEFAULT_PLANS),
                                   description="Plans by name, as JSON: rate limit and default storage quota.")
    auth_remember_s: float = Field(
        default=2.0, ge=0, description="Seconds an API process remembers a key it authenticated (0: look it up on "
        "every request). A key revoked through that process stops at once; revoked elsewhere (the CLI, another "
        "API process), within this time.")
    rate_limit_storage: str = Field(
        default="memory://", description="`limits` storage URI; redis://host:6379 shares limits across API processes.")
    events_heartbeat_s: float = Field(
        default=15.0, gt=0, description="Seconds between keep-alive comments on an idle event stream "
        "(`GET /images/{id}/events`), so proxies and clients see the connection alive.")
    events_poll_s: float = Field(
        default=0.25, gt=0, description="How often event streams read progress when the catalog cannot announce "
        "changes (SQLite); on Postgres, changes arrive by LISTEN/NOTIFY and this is only the safety net (×20).")
    signing_secret: SecretStr | None = Field(
        default=None, description="HMAC secret of signed download links, at least 32 characters (`openssl rand "
        "-base64 48`); default: made once in <home>/signing.key.")
    signed_url_ttl_s: int = Field(default=900, ge=1, description="Default lifetime of a signed download link.")
    signed_url_max_ttl_s: int = Field(default=86400, ge=1)
    log_format: Literal["json", "text", "console"] = Field(
        default="json", description="The API's logs: JSON lines (production), plain text, or a coloured console "
        "for development (`imago serve` uses it unless this is set).")
    public_url: str | None = Field(
        default=None, description="Base URL of the API as clients reach it (https://images.example.com), used "
        "to build signed download links; when unset, the request's own address (its Host header) is used.")

    @field_validator("signing_secret", "admin_api_key")
    @classmethod
    def _strong_secret(cls, value: SecretStr | None) -> SecretStr | None:
        """Unset when empty; refused when short: a guessable signing secret lets anyone forge download links,
        a guessable operator key lets anyone manage every client."""
        if value is None or not value.get_secret_value().strip():
            return None
        if len(value.get_secret_value().strip()) < MIN_SECRET_CHARS:
            raise ValueError(f"must be at least {MIN_SECRET_CHARS} characters (e.g. `openssl rand -base64 48`)")
        return value

    @cached_property
    def resolved_home(self) -> Path:
        return self.home.expanduser().resolve()

    @property
    def catalog_url(self) -> str:
        return self.database_url or f"sqlite:///{self.resolved_home / 'catalog.db'}"

    @property
    def blob_root(self) -> Path:
        return (self.blob_dir or self.resolved_home / "blobs").expanduser().resolve()

    @property
    def lake_root(self) -> Path:
        return (self.lake_dir or self.resolved_home / "lake").expanduser().resolve()

    @property
    def lake_location(self) -> str:
        """The lake's root as `LakeResource` and `imago` name it: the S3 URI, else the folder."""
        return self.lake_uri or str(self.lake_root)

    @property
    def drop_root(self) -> Path:
        return (self.drop_dir or self.resolved_home / "drop").expanduser().resolve()

    @property
    def retention_days(self) -> dict[str, int]:
        """Days each retained table keeps a row, by lake table name."""
        return {"inference_log": self.inference_log_retention_days, "feedback": self.feedback_retention_days}

    @property
    def models_dir(self) -> Path:
        """Where model artifacts are cached locally (Keras loads from a path)."""
        return self.resolved_home / "models"

    @property
    def dagster_home(self) -> Path:
        return Path(os.environ.get("DAGSTER_HOME") or self.resolved_home / "dagster").resolve()


# Never in a Dagster run's configuration (shown in the UI): read from the environment where they are used.
SECRET_FIELDS = {"gemini_api_key", "openrouter_api_key", "s3_secret_access_key", "admin_api_key", "signing_secret"}
