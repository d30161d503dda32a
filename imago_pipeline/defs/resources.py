"""Every Dagster resource, defined once; values come from `ImagoSettings` or, for secrets, `EnvVar`."""


import os
from contextlib import contextmanager
from typing import Callable, Iterator, Sequence, TypeVar

import dagster as dg
from pydantic import PrivateAttr

from imago_pipeline.core.catalog import Catalog
from imago_pipeline.core.config import ImagoSettings
from imago_pipeline.core.parallel import WorkerPool, worker_pool
from imago_pipeline.core.stores.blobs import BlobStore, LocalBlobStore, S3BlobStore, s3_client
from imago_pipeline.core.stores.lake import Lake
from imago_pipeline.core.vision.base import VisionProvider
from imago_pipeline.core.vision.factory import build_provider


class CatalogResource(dg.ConfigurableResource):
    """The catalog database (SQLite by default, Postgres in production)."""

    database_url: str
    _catalog: Catalog | None = PrivateAttr(default=None)

    def get(self) -> Catalog:
        if self._catalog is None:
            self._catalog = Catalog.connect(self.database_url)
        return self._catalog


class BlobStoreResource(dg.ConfigurableResource):
    """Originals and thumbnails: a local folder on the embedded default, S3 (or MinIO) in production."""

    backend: str = "local"
    root: str = ""
    s3_bucket: str = ""
    s3_prefix: str = ""
    s3_endpoint_url: str | None = None
    s3_region: str = "us-east-1"
    s3_access_key_id: str | None = None
    s3_secret_access_key: str | None = None
    _store: BlobStore | None = PrivateAttr(default=None)

    def get(self) -> BlobStore:
        if self._store is None:
            self._store = S3BlobStore(self.s3_bucket, self.s3_prefix, **self._client_settings()) \
                if self.backend == "s3" else LocalBlobStore(self.root)
        return self._store

    def s3(self):
        """A boto3 client for this S3 endpoint and these credentials (also used by the S3 drop sensor)."""
        return s3_client(**self._client_settings())

    def _client_settings(self) -> dict:
        return dict(endpoint_url=self.s3_endpoint_url, region=self.s3_region, access_key_id=self.s3_access_key_id,
                    secret_access_key=self.s3_secret_access_key)


T = TypeVar("T")
R = TypeVar("R")


class WorkerPoolResource(dg.ConfigurableResource):
    """Worker processes for the per-image work: opened when a run starts, shut down when it ends (in a
    `finally`), so a finished or failed run leaves no process behind."""

    workers: int
    _pool: WorkerPool | None = PrivateAttr(default=None)

    @contextmanager
    def yield_for_execution(self, context: dg.InitResourceContext) -> Iterator["WorkerPoolResource"]:
        with worker_pool(self.workers) as pool:
            self._pool = pool
            try:
                yield self
            finally:
                self._pool = None

    def map(self, fn: Callable[[T], R], items: Sequence[T], on_crash: Callable[[T], R] | None = None) -> list[R]:
        if self._pool is None:  # called outside a run (a direct asset call in a test): a pool for this call
            with worker_pool(self.workers) as pool:
                return pool.map(fn, items, on_crash)
        return self._pool.map(fn, items, on_crash)


class LakeResource(dg.ConfigurableResource):
    """The Parquet lake root that DuckDB reads."""

    root: str

    def get(self) -> Lake:
        return Lake(self.root)


class SettingsResource(dg.ConfigurableResource):
    """The non-secret settings the pipeline needs: limits, batching, parallelism, the drop folder."""

    drop_dir: str
    default_tenant: str
    batch_size: int
    workers: int
    max_pixels: int
    max_upload_bytes: int
    thumbnail_size: int
    ocr_languages: str
    ocr_fallback_confidence: float
    s3_drop_uri: str = ""

    def imago_settings(self) -> ImagoSettings:
        return ImagoSettings(drop_dir=self.drop_dir, default_tenant=self.default_tenant, batch_size=self.batch_size,
                             workers=self.workers, max_pixels=self.max_pixels,
                             max_upload_bytes=self.max_upload_bytes, thumbnail_size=self.thumbnail_size,
                             ocr_languages=self.ocr_languages, ocr_fallback_confidence=self.ocr_fallback_confidence)


class MaintenanceResource(dg.ConfigurableResource):
    """Retention periods (GDPR) and the nightly reprocessing's budget and retry policy."""

    inference_log_retention_days: int = 180
    feedback_retention_days: int = 365
    reprocess_budget: int = 5000
    reprocess_max_retries: int = 3
    reprocess_backoff_s: int = 6 * 3600
    claim_grace_s: int = 120


class TrainingResource(dg.ConfigurableResource):
    """Where retraining finds its data, how it trains, and the promotion gate's margin."""

    training_data: str = ""
    validation_data: str = ""
    model_cache_dir: str
    retrain_min_feedback: int = 20
    promotion_margin: float = 0.01
    epochs: int = 50
    image_size: int = 128
    widths: str = "32,64,128,256"
    augment: bool = True
    batch_size: int = 32

    def train_config(self):
        from training.model import ModelConfig
        from training.train import TrainConfig

        model = ModelConfig(image_size=self.image_size, widths=tuple(int(w) for w in self.widths.split(",")))
        if not self.augment:
            model = ModelConfig(image_size=model.image_size, widths=model.widths, dropout=0.1, rotation=0.0,
                                zoom=0.0, translation=0.0, contrast=0.0)
        return TrainConfig(model=model, epochs=self.epochs, batch_size=self.batch_size)


class VisionResource(dg.ConfigurableResource):
    """The vision provider: `local` (offline, the default) or `gemini` (key from the environment)."""

    provider: str = "local"
    gemini_model: str = "gemini-2.5-flash"
    gemini_api_key: str = ""
    gemini_base_url: str | None = None
    attempts: int = 4
    initial_delay_s: float = 1.0

    def get_provider(self) -> VisionProvider:
        return build_provider(self.provider, gemini_model=self.gemini_model, gemini_api_key=self.gemini_api_key,
                              gemini_base_url=self.gemini_base_url, attempts=self.attempts,
                              initial_delay_s=self.initial_delay_s)


def build_resources(settings: ImagoSettings | None = None) -> dict[str, dg.ConfigurableResource]:
    settings = settings or ImagoSettings()
    # A Postgres URL may carry a password: read it from the environment at run start, never show it.
    from_env = settings.database_url is not None and settings.database_url == os.environ.get("IMAGO_DATABASE_URL")
    database_url = dg.EnvVar("IMAGO_DATABASE_URL") if from_env else settings.catalog_url
    return {
        "catalog": CatalogResource(database_url=database_url),
        "blobs": BlobStoreResource(
            backend=settings.blob_backend, root=str(settings.blob_root), s3_bucket=settings.s3_bucket,
            s3_prefix=settings.s3_prefix, s3_endpoint_url=settings.s3_endpoint_url, s3_region=settings.s3_region,
            s3_access_key_id=settings.s3_access_key_id,
            # like the Gemini key: read from the environment at run start, never shown in the UI
            s3_secret_access_key=(dg.EnvVar("IMAGO_S3_SECRET_ACCESS_KEY")
                                  if os.environ.get("IMAGO_S3_SECRET_ACCESS_KEY")
                                  else settings.s3_secret_access_key.get_secret_value()
                                  if settings.s3_secret_access_key else None)),
        "lake": LakeResource(root=str(settings.lake_root)),
        "worker_pool": WorkerPoolResource(workers=settings.workers),
        "settings": SettingsResource(
            drop_dir=str(settings.drop_root), default_tenant=settings.default_tenant,
            batch_size=settings.batch_size, workers=settings.workers, max_pixels=settings.max_pixels,
            max_upload_bytes=settings.max_upload_bytes, thumbnail_size=settings.thumbnail_size,
            ocr_languages=settings.ocr_languages, ocr_fallback_confidence=settings.ocr_fallback_confidence,
            s3_drop_uri=settings.s3_drop_uri or ""),
        "maintenance": MaintenanceResource(
            inference_log_retention_days=settings.inference_log_retention_days,
            feedback_retention_days=settings.feedback_retention_days, reprocess_budget=settings.reprocess_budget,
            reprocess_max_retries=settings.reprocess_max_retries, reprocess_backoff_s=settings.reprocess_backoff_s,
            claim_grace_s=settings.claim_grace_s),
        "training": TrainingResource(
            training_data=str(settings.training_data or ""), validation_data=str(settings.validation_data or ""),
            model_cache_dir=str(settings.resolved_home / "models"), retrain_min_feedback=settings.retrain_min_feedback,
            promotion_margin=settings.promotion_margin, epochs=settings.train_epochs,
            image_size=settings.train_image_size, widths=settings.train_widths, augment=settings.train_augment,
            batch_size=settings.train_batch_size),
        "vision_provider": VisionResource(
            provider=settings.vision_provider, gemini_model=settings.gemini_model,
            # the key is read from the environment at run start and never shown in the UI
            gemini_api_key=(dg.EnvVar("IMAGO_GEMINI_API_KEY") if os.environ.get("IMAGO_GEMINI_API_KEY")
                            else settings.gemini_api_key or ""),
            gemini_base_url=settings.gemini_base_url, attempts=settings.vision_attempts,
            initial_delay_s=settings.vision_initial_delay_s),
    }
