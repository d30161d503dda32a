"""Classifier monitoring as lake tables: inference latency and prediction-feedback agreement.

The API exports the same figures live as Prometheus metrics (`GET /metrics`); these tables are what
analysts query with DuckDB. Both are whole-table snapshots of the catalog (retention purges them there).
"""

from __future__ import annotations

from datetime import UTC
from typing import Any

import numpy as np

from imago_pipeline.core.catalog import Catalog
from imago_pipeline.core.stores import lake_tables
from imago_pipeline.core.stores.lake import Lake


def _day(created_at):
    return created_at.astimezone(UTC).date()


def snapshot(catalog: Catalog, lake: Lake) -> dict[str, Any]:
    """Rewrite the `inference_log` and `feedback` lake tables; returns counts, latency percentiles and
    agreement per model version."""
    logs, feedback = catalog.feedback.inference_logs(), catalog.feedback.all()
    lake.replace_table(lake_tables.INFERENCE_LOG.name, [
        {c: getattr(row, c) for c in lake_tables.INFERENCE_LOG.schema.names}
        | {"tenant_id": row.tenant_id or 0, "date": _day(row.created_at)} for row in logs],
        schema=lake_tables.INFERENCE_LOG.schema)
    lake.replace_table(lake_tables.FEEDBACK.name, [
        {c: getattr(row, c) for c in lake_tables.FEEDBACK.schema.names}
        | {"tenant_id": row.tenant_id, "date": _day(row.created_at)} for row in feedback],
        schema=lake_tables.FEEDBACK.schema)
    agreement: dict[str, list[int]] = {}
    for row in feedback:
        if row.model_version:
            counts = agreement.setdefault(row.model_version, [0, 0])
            counts[0] += 1
            counts[1] += int(row.correct)
    figures: dict[str, Any] = {"inferences": len(logs), "feedback": len(feedback),
                               "agreement_by_model": {v: round(a / t, 4) for v, (t, a) in agreement.items()}}
    latencies = np.array([row.latency_ms for row in logs if row.success])
    if latencies.size:
        for p in (50, 95, 99):
            figures[f"latency_p{p}_ms"] = round(float(np.percentile(latencies, p)), 1)
    return figures
