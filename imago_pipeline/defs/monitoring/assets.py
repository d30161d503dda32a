"""Classifier monitoring as lake tables (`imago_pipeline.core.monitoring`), every 15 minutes."""

import dagster as dg

from imago_pipeline.core.monitoring import snapshot
from imago_pipeline.defs.governance.assets import retention_purge
from imago_pipeline.defs.resources import CatalogResource, LakeResource

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
    figures = snapshot(catalog.get(), lake.get())
    metadata = {k: dg.MetadataValue.json(v) if isinstance(v, dict) else
                dg.MetadataValue.float(v) if isinstance(v, float) else v for k, v in figures.items()}
    return dg.MaterializeResult(metadata=metadata)
