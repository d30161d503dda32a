"""Retention (GDPR): inference logs and feedback are kept for a set number of days, then purged everywhere.

Everywhere means the catalog and the lake (the affected Parquet files are rewritten). The SQL models built
from these tables are rebuilt by the same Dagster run (`retention_job`: the purge, then the monitoring
snapshot and every model downstream of it). Each purge writes an audit row with what, the cutoff and the
counts (with the catalog's deletion, then completed with the lake's count), and running it twice removes
nothing more.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial

from imago_pipeline.core.catalog import Catalog
from imago_pipeline.core.catalog.feedback import RETAINED
from imago_pipeline.core.catalog.models import AuditEvent
from imago_pipeline.core.stores.lake import Lake


@dataclass(frozen=True)
class PurgeResult:
    table: str
    retention_days: int
    cutoff: datetime
    catalog_rows: int
    lake_rows: int | None  # None in an audit row written before the lake's purge (filled in after it)

    def as_audit(self) -> dict:
        return {"table": self.table, "retention_days": self.retention_days, "cutoff": self.cutoff.isoformat(),
                "catalog_rows": self.catalog_rows, "lake_rows": self.lake_rows}


def _audit_row(table: str, days: int, cutoff: datetime, deleted: int) -> AuditEvent:
    return AuditEvent(action=f"purge_{table}", tenant_id=None,
                      detail=PurgeResult(table, days, cutoff, deleted, None).as_audit())


def purge_expired(catalog: Catalog, lake: Lake, retention_days: dict[str, int], *, now: datetime | None = None,
                  dry_run: bool = False) -> list[PurgeResult]:
    """Delete rows older than their table's retention period; `dry_run` only counts them."""
    now = now or datetime.now(UTC)
    results = []
    for table in RETAINED:
        days = retention_days[table]
        cutoff = now - timedelta(days=days)
        # The catalog's rows and their audit row (lake_rows still null) in one transaction, then the lake, then
        # the lake's count into that row: a purge killed half-way is on record with what it did.
        rows, event = catalog.feedback.older_than(table, cutoff, delete_them=not dry_run,
                                                  audit=partial(_audit_row, table, days, cutoff))
        lake_rows = lake.count_before(table, "created_at", cutoff) if dry_run else \
            lake.delete_before(table, "created_at", cutoff)
        if event is not None:
            catalog.audit_log.amend(event, lake_rows=lake_rows)
        results.append(PurgeResult(table, days, cutoff, rows, lake_rows))
    return results
