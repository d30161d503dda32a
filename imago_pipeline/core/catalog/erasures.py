"""Erasures recorded with their catalog deletion and finished later: see `core/erasure.py`."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import CursorResult, delete, select

from imago_pipeline.core.catalog.models import AuditEvent, PendingErasure

if TYPE_CHECKING:
    from imago_pipeline.core.catalog.catalog import Catalog


class PendingErasures:
    def __init__(self, catalog: Catalog):
        self.catalog = catalog

    def of_image(self, tenant_id: int, image_id: int) -> PendingErasure | None:
        """The tenant's unfinished erasure of this image (a retried DELETE finishes it)."""
        with self.catalog.session() as session:
            return session.scalar(select(PendingErasure).where(PendingErasure.tenant_id == tenant_id,
                                                               PendingErasure.image_id == image_id)
                                  .order_by(PendingErasure.id).limit(1))

    def image_id_for_uuid(self, tenant_id: int, image_uuid: str) -> int | None:
        """The id of the tenant's image being erased under this uuid, if its erasure is unfinished."""
        with self.catalog.session() as session:
            return session.scalar(select(PendingErasure.image_id).where(PendingErasure.tenant_id == tenant_id,
                                                                        PendingErasure.image_uuid == image_uuid)
                                  .limit(1))

    def requested_before(self, moment: datetime) -> list[PendingErasure]:
        """Unfinished erasures requested before `moment` (younger ones may still be under way)."""
        with self.catalog.session() as session:
            return list(session.scalars(select(PendingErasure).where(PendingErasure.requested_at < moment)
                                        .order_by(PendingErasure.id)))

    def finish(self, erasure: PendingErasure, detail: dict[str, Any]) -> bool:
        """Remove the record and write the audit row, in one transaction; False when another finisher did
        (so an erasure is audited once however many finish it)."""
        with self.catalog.session() as session:
            removed = cast(CursorResult, session.execute(
                delete(PendingErasure).where(PendingErasure.id == erasure.id))).rowcount
            if removed:
                session.add(AuditEvent(action="erase_image", tenant_id=erasure.tenant_id, detail=detail))
            session.commit()
        self.catalog.scrub()  # neither the image's rows nor this record's key (its hash) stay in the files
        return bool(removed)
