from imago_pipeline.core.catalog.repository import (
    Catalog,
    CheckOutcome,
    ImageFilters,
    Principal,
    StageOutcome,
    TenantCatalog,
)

__all__ = ["Catalog", "CheckOutcome", "ImageFilters", "Principal", "StageOutcome", "TenantCatalog"]
