"""Classifier monitoring as lake tables: inference latency and prediction-feedback agreement.

The API exports the same figures live as Prometheus metrics (`GET /metrics`); these tables are what
analysts query with DuckDB, refreshed every 15 minutes by declarative automation.
"""

from datetime import timezone

import dagster as dg
import numpy as np
import pyarrow as pa
from sqlalchemy import select

from imago_pipeline.core.catalog.models import Feedback, InferenceLog
from imago_pipeline.defs.governance.jobs import retention_purge
from imago_pipeline.defs.resources import CatalogResource, LakeResource

_TS = pa.timestamp("us", tz="UTC")
INFERENCE_LOG_SCHEMA = pa.schema([("id", pa.int64()), ("success", pa.bool_()), ("error", pa.string()),
                                  ("latency_ms", pa.float64()), ("model_version", pa.string()),
                                  ("label", pa.string()), ("created_at", _TS)])
FEEDBACK_SCHEMA = pa.schema([("id", pa.int64()), ("image_id", pa.int64()), ("correct", pa.bool_()),
                             ("label", pa.string()), ("predicted_label", pa.string()),
                             ("model_version", pa.string()), ("used_in_version", pa.string()),
                             ("created_at", _TS)])


# Every 15 minutes whatever its upstream did: `on_cron` would also wait for the daily retention purge.
EVERY_15_MINUTES = (dg.AutomationCondition.cron_tick_passed("*/15 * * * *").since_last_handled()
                    & ~dg.AutomationCondition.in_progress()).with_label("every 15 minutes")


@dg.asset(group_name="monitoring", kinds={"parquet", "prometheus"}, owners=["team:imago"],
          deps=[retention_purge], automation_condition=EVERY_15_MINUTES)
def classifier_monitoring(context: dg.AssetExecutionContext, catalog: CatalogResource,
                          lake: LakeResource) -> dg.MaterializeResult:
    """Snapshots of `inference_log` (latency, outcome, model version; never image content) and `feedback`
    (agreement between predictions and users) in the lake, with latency percentiles and agreement per model
    version as metadata."""
    with catalog.get().session() as session:
        logs = session.scalars(select(InferenceLog)).all()
        feedback = session.scalars(select(Feedback)).all()
    store = lake.get()
    store.replace_table("inference_log", [
        {c: getattr(row, c) for c in INFERENCE_LOG_SCHEMA.names} | {"tenant_id": row.tenant_id or 0,
                                                                   "date": row.created_at.astimezone(timezone.utc).date()}
        for row in logs], schema=INFERENCE_LOG_SCHEMA)
    store.replace_table("feedback", [
        {c: getattr(row, c) for c in FEEDBACK_SCHEMA.names} | {"tenant_id": row.tenant_id,
                                                              "date": row.created_at.astimezone(timezone.utc).date()}
        for row in feedback], schema=FEEDBACK_SCHEMA)
    latencies = np.array([row.latency_ms for row in logs if row.success]) if logs else np.array([])
    agreement: dict[str, list[int]] = {}
    for row in feedback:
        if row.model_version:
            counts = agreement.setdefault(row.model_version, [0, 0])
            counts[0] += 1
            counts[1] += int(row.correct)
    metadata = {"inferences": len(logs), "feedback": len(feedback),
                "agreement_by_model": dg.MetadataValue.json(
                    {v: round(agreed / total, 4) for v, (total, agreed) in agreement.items()})}
    if latencies.size:
        for p in (50, 95, 99):
            metadata[f"latency_p{p}_ms"] = dg.MetadataValue.float(round(float(np.percentile(latencies, p)), 1))
    return dg.MaterializeResult(metadata=metadata)
