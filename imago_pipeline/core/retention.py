"""Retention (GDPR): inference logs and feedback are kept for a set number of days, then purged everywhere.

Everywhere means the catalog and the lake (the affected Parquet files are rewritten). The SQL models built
from these tables are rebuilt by the same Dagster run (`retention_job`: the purge, then the monitoring
snapshot and every model downstream of it). Each purge writes an audit row with what, the cutoff and the
counts, and running it twice removes nothing more.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from imago_pipeline.core.catalog import Catalog
from imago_pipeline.core.catalog.feedback import RETAINED
from imago_pipeline.core.stores.lake import Lake


@dataclass(frozen=True)
class PurgeResult:
    table: str
    retention_days: int
    cutoff: datetime
    catalog_rows: int
    lake_rows: int

    def as_audit(self) -> dict:
        return {"table": self.table, "retention_days": self.retention_days, "cutoff": self.cutoff.isoformat(),
                "catalog_rows": self.catalog_rows, "lake_rows": self.lake_rows}


def purge_expired(catalog: Catalog, lake: Lake, retention_days: dict[str, int], *, now: datetime | None = None,
                  dry_run: bool = False) -> list[PurgeResult]:
    """Delete rows older than their table's retention period; `dry_run` only counts them."""
    now = now or datetime.now(UTC)
    results = []
    for table in RETAINED:
        days = retention_days[table]
        cutoff = now - timedelta(days=days)
        rows = catalog.feedback.older_than(table, cutoff, delete_them=not dry_run)
        lake_rows = lake.count_before(table, "created_at", cutoff) if dry_run else \
            lake.delete_before(table, "created_at", cutoff)
        result = PurgeResult(table, days, cutoff, rows, lake_rows)
        if not dry_run:
            catalog.audit_log.record(f"purge_{table}", tenant_id=None, detail=result.as_audit())
        results.append(result)
    return results
