from imago_pipeline.catalog.repository import (
    Catalog,
    CheckOutcome,
    ImageFilters,
    Principal,
    StageOutcome,
    TenantCatalog,
)

__all__ = ["Catalog", "CheckOutcome", "ImageFilters", "Principal", "StageOutcome", "TenantCatalog"]
