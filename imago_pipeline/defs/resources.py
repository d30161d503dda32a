"""Every Dagster resource, defined once, wrapping a core store. Values come from one `ImagoSettings`
(`build_resources`); nothing here has a default of its own. Secrets (the catalog URL when it comes from the
environment, the S3 secret, the Gemini key) are `EnvVar`s: read at run start, never shown in the UI."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import dagster as dg
from pydantic import PrivateAttr

from imago_pipeline.core.catalog import Catalog
from imago_pipeline.core.config import SECRET_FIELDS, ImagoSettings
from imago_pipeline.core.parallel import WorkerPool, worker_pool
from imago_pipeline.core.stores.blobs import BlobStore, build_blob_store, s3_client_for
from imago_pipeline.core.stores.lake import Lake
from imago_pipeline.core.stores.lake_files import lake_files_for

T = TypeVar("T")
R = TypeVar("R")


def _secret(env_name: str, value: str | None) -> str | dg.EnvVar:
    """From the environment at run start when it is set there, else the value given (tests, a CLI run)."""
    return dg.EnvVar(env_name) if os.environ.get(env_name) else (value or "")


class SettingsResource(dg.ConfigurableResource):
    """Every setting of `ImagoSettings` (limits, batching, providers, retention, retraining, paths)."""

    values: str  # the settings as JSON, without the secrets
    gemini_api_key: str
    openrouter_api_key: str = ""
    s3_secret_access_key: str
    _settings: ImagoSettings | None = PrivateAttr(default=None)

    @classmethod
    def of(cls, settings: ImagoSettings) -> SettingsResource:
        secret = settings.s3_secret_access_key.get_secret_value() if settings.s3_secret_access_key else None
        hidden = SECRET_FIELDS | ({"database_url"} if _from_environment(settings) else set())
        return cls(values=settings.model_dump_json(exclude=hidden),
                   gemini_api_key=_secret("IMAGO_GEMINI_API_KEY", settings.gemini_api_key),
                   openrouter_api_key=_secret("IMAGO_OPENROUTER_API_KEY", settings.openrouter_api_key),
                   s3_secret_access_key=_secret("IMAGO_S3_SECRET_ACCESS_KEY", secret))

    def get(self) -> ImagoSettings:
        if self._settings is None:
            secrets = {"gemini_api_key": self.gemini_api_key or None,
                       "openrouter_api_key": self.openrouter_api_key or None,
                       "s3_secret_access_key": self.s3_secret_access_key or None}
            self._settings = ImagoSettings(**json.loads(self.values), **secrets)
        return self._settings


class CatalogResource(dg.ConfigurableResource):
    """The catalog database (SQLite by default, Postgres in production); one engine per process."""

    database_url: str
    _catalog: Catalog | None = PrivateAttr(default=None)

    def get(self) -> Catalog:
        if self._catalog is None:
            self._catalog = Catalog.connect(self.database_url)
        return self._catalog


class BlobStoreResource(dg.ConfigurableResource):
    """Originals and thumbnails: a local folder on the embedded default, S3 (or MinIO) in production."""

    settings: SettingsResource
    _store: BlobStore | None = PrivateAttr(default=None)

    def get(self) -> BlobStore:
        if self._store is None:
            self._store = build_blob_store(self.settings.get())
        return self._store

    def s3(self):
        """A boto3 client for this S3 endpoint and these credentials (the S3 drop sensor's)."""
        return s3_client_for(self.settings.get())


class LakeResource(dg.ConfigurableResource):
    """The Parquet lake that DuckDB reads: a folder, or `s3://bucket/prefix` (reached with the settings'
    S3 endpoint and credentials)."""

    root: str
    settings: SettingsResource | None = None

    def get(self) -> Lake:
        if self.root.startswith("s3://"):
            if self.settings is None:
                raise ValueError("an S3 lake needs the settings (endpoint, credentials, catalog for its locks)")
            return Lake(lake_files_for(self.settings.get(), self.root))
        return Lake(self.root)


class WorkerPoolResource(dg.ConfigurableResource):
    """Worker processes for the per-image work: opened when a run starts, shut down when it ends (in a
    `finally`), so a finished or failed run leaves no process behind."""

    workers: int
    _pool: WorkerPool | None = PrivateAttr(default=None)

    @contextmanager
    def yield_for_execution(self, context: dg.InitResourceContext) -> Iterator[WorkerPoolResource]:
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


class ModelStoreResource(dg.ConfigurableResource):
    """The classifier's model store: versions in the catalog, artifacts in the blob store, cached locally."""

    catalog: CatalogResource
    blobs: BlobStoreResource
    cache_dir: str
    _models: object = PrivateAttr(default=None)

    def get(self):
        if self._models is None:
            from training.registry import open_model_store

            self._models = open_model_store(self.catalog.get(), self.blobs.get(), Path(self.cache_dir))
        return self._models


def _from_environment(settings: ImagoSettings) -> bool:
    """The catalog URL (which may carry a password) came from the environment: it is read there again."""
    return settings.database_url is not None and settings.database_url == os.environ.get("IMAGO_DATABASE_URL")


def build_resources(settings: ImagoSettings | None = None) -> dict[str, dg.ConfigurableResource]:
    settings = settings or ImagoSettings()
    settings_resource = SettingsResource.of(settings)
    catalog = CatalogResource(database_url=dg.EnvVar("IMAGO_DATABASE_URL") if _from_environment(settings)
                              else settings.catalog_url)
    blobs = BlobStoreResource(settings=settings_resource)
    return {
        "settings": settings_resource,
        "catalog": catalog,
        "blobs": blobs,
        "lake": LakeResource(root=settings.lake_location, settings=settings_resource),
        "worker_pool": WorkerPoolResource(workers=settings.workers),
        "models": ModelStoreResource(catalog=catalog, blobs=blobs, cache_dir=str(settings.models_dir)),
    }
