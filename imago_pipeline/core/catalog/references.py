"""Which stored files the catalog still points at: what `sweep_orphan_blobs` asks before deleting one.

Both questions go through indexes (the tenant's content hashes, the images' ids), so a sweep over a
million files costs a few thousand indexed lookups, not a scan of the images per file."""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING

from sqlalchemy import select

from imago_pipeline.core.catalog.models import Image, Tenant

if TYPE_CHECKING:
    from imago_pipeline.core.catalog.catalog import Catalog


class BlobReferences:
    def __init__(self, catalog: Catalog):
        self.catalog = catalog

    def tenants(self) -> set[int]:
        """Every tenant's id (a tenant is never deleted, only disabled)."""
        with self.catalog.session() as session:
            return set(session.scalars(select(Tenant.id)))

    def originals_in_use(self, tenant_id: int, shas: Collection[str]) -> set[str]:
        """The blob keys of the tenant's images with these contents (at most one image per content)."""
        with self.catalog.session() as session:
            return set(session.scalars(select(Image.blob_key).where(Image.tenant_id == tenant_id,
                                                                    Image.sha256.in_(list(shas)))))

    def images_present(self, tenant_id: int, image_ids: Collection[int]) -> set[int]:
        """Which of these images the tenant still has (ids are never reused: an erased image stays gone)."""
        with self.catalog.session() as session:
            return set(session.scalars(select(Image.id).where(Image.tenant_id == tenant_id,
                                                              Image.id.in_(list(image_ids)))))
