"""The catalog: one database (SQLite embedded, Postgres in production), one store per concern."""

from imago_pipeline.core.catalog.catalog import Catalog
from imago_pipeline.core.catalog.clients import ALL_SCOPES, DEFAULT_SCOPES, ClientExists, Principal
from imago_pipeline.core.catalog.results import CheckOutcome, StageOutcome
from imago_pipeline.core.catalog.tenant import ImageFilters, NewUpload, QuotaExceeded, TenantCatalog, register_uploads

__all__ = ["ALL_SCOPES", "DEFAULT_SCOPES", "Catalog", "CheckOutcome", "ClientExists", "ImageFilters", "NewUpload",
           "Principal", "QuotaExceeded", "StageOutcome", "TenantCatalog", "register_uploads"]
