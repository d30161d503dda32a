"""What an erasure or a retention purge removed: counts per store, never the erased content."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import update

from imago_pipeline.core.catalog.models import AuditEvent

if TYPE_CHECKING:
    from imago_pipeline.core.catalog.catalog import Catalog


class AuditLog:
    def __init__(self, catalog: Catalog):
        self.catalog = catalog

    def record(self, action: str, *, tenant_id: int | None, detail: dict[str, Any]) -> None:
        with self.catalog.session() as session:
            session.add(AuditEvent(action=action, tenant_id=tenant_id, detail=detail))
            session.commit()

    def amend(self, event: AuditEvent, **detail: Any) -> None:
        """Complete a row written before its action ended (a purge's lake count, once the lake is done)."""
        with self.catalog.session() as session:
            session.execute(update(AuditEvent).where(AuditEvent.id == event.id)
                            .values(detail={**event.detail, **detail}))
            session.commit()
