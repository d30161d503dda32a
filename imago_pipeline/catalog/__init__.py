from imago_pipeline.catalog.repository import Catalog, ImageFilters, Principal, StageOutcome, TenantCatalog

__all__ = ["Catalog", "ImageFilters", "Principal", "StageOutcome", "TenantCatalog"]
