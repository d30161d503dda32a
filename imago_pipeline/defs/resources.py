"""Every Dagster resource, defined once; values come from `ImagoSettings` or, for secrets, `EnvVar`."""


import os

import dagster as dg
from pydantic import PrivateAttr

from imago_pipeline.catalog import Catalog
from imago_pipeline.config import ImagoSettings
from imago_pipeline.storage.blobs import BlobStore, LocalBlobStore
from imago_pipeline.storage.lake import Lake


class CatalogResource(dg.ConfigurableResource):
    """The catalog database (SQLite by default, Postgres in production)."""

    database_url: str
    _catalog: Catalog | None = PrivateAttr(default=None)

    def get(self) -> Catalog:
        if self._catalog is None:
            self._catalog = Catalog.connect(self.database_url)
        return self._catalog


class BlobStoreResource(dg.ConfigurableResource):
    """Originals and thumbnails; a local folder on the embedded default."""

    root: str

    def get(self) -> BlobStore:
        return LocalBlobStore(self.root)


class LakeResource(dg.ConfigurableResource):
    """The Parquet lake root that DuckDB reads."""

    root: str

    def get(self) -> Lake:
        return Lake(self.root)


class ProcessingResource(dg.ConfigurableResource):
    """Limits and parallelism of the per-image work."""

    workers: int
    max_pixels: int
    thumbnail_size: int
    batch_size: int


def build_resources(settings: ImagoSettings | None = None) -> dict[str, dg.ConfigurableResource]:
    settings = settings or ImagoSettings()
    # A Postgres URL may carry a password: read it from the environment at run start, never show it.
    database_url = dg.EnvVar("IMAGO_DATABASE_URL") if os.environ.get("IMAGO_DATABASE_URL") else settings.catalog_url
    return {
        "catalog": CatalogResource(database_url=database_url),
        "blobs": BlobStoreResource(root=str(settings.blob_root)),
        "lake": LakeResource(root=str(settings.lake_root)),
        "processing": ProcessingResource(workers=settings.workers, max_pixels=settings.max_pixels,
                                         thumbnail_size=settings.thumbnail_size, batch_size=settings.batch_size),
    }
