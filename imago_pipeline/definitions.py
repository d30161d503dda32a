"""The Dagster code location: each domain folder of `defs/` defines its part; this module only assembles.

    intake/       uploads and bulk drops become runs (upload_sensor, drop sensors)
    enrichment/   the per-image assets over the core's stages, and the process_images job
    reprocessing/ stranded and stale images redone (sensors), the nightly batch job
    training/     retraining from feedback behind a promotion gate
    monitoring/   the classifier's monitoring snapshot in the lake
    governance/   the GDPR retention purge, the sweep of stored files no row points at
    analytics/    the SQL models of dbt_like_sql/ and their automation
"""

import dagster as dg

from imago_pipeline.core.config import ImagoSettings
from imago_pipeline.defs.analytics.assets import build_sql_model_assets, sql_models_automation
from imago_pipeline.defs.analytics.compaction import lake_compaction
from imago_pipeline.defs.enrichment.assets import build_image_assets, process_images_job, uploads
from imago_pipeline.defs.governance.assets import (
    orphan_blob_sweep,
    retention_job,
    retention_purge,
    retention_schedule,
    unfinished_erasures,
)
from imago_pipeline.defs.intake.sensors import (
    drop_folder_sensor,
    partition_window_sensor,
    s3_drop_sensor,
    upload_sensor,
)
from imago_pipeline.defs.monitoring.assets import classifier_monitoring
from imago_pipeline.defs.reprocessing.jobs import batch_reprocess_job, nightly_reprocess_schedule
from imago_pipeline.defs.reprocessing.sensors import reclassify_sensor, stale_reprocess_sensor, stranded_images_sensor
from imago_pipeline.defs.resources import build_resources
from imago_pipeline.defs.training.assets import (
    classifier_candidate,
    feedback_sensor,
    production_classifier,
    retrain_classifier_job,
)


def build_definitions(settings: ImagoSettings | None = None) -> dg.Definitions:
    """The whole code location, with resources for `settings` (the environment's by default)."""
    settings = settings or ImagoSettings()
    return dg.Definitions(
        assets=[uploads, *build_image_assets(settings), classifier_candidate, production_classifier,
                classifier_monitoring, retention_purge, orphan_blob_sweep, unfinished_erasures, lake_compaction,
                *build_sql_model_assets(settings)],
        jobs=[process_images_job, retrain_classifier_job, retention_job, batch_reprocess_job],
        schedules=[retention_schedule, nightly_reprocess_schedule],
        sensors=[upload_sensor, partition_window_sensor, stranded_images_sensor, drop_folder_sensor, s3_drop_sensor,
                 stale_reprocess_sensor, reclassify_sensor, feedback_sensor, sql_models_automation],
        resources=build_resources(settings),
        # Runs without an executor of their own (the SQL models' automation, retention, reprocessing, a
        # materialization from the UI) execute their steps in the run's process: each step in a spawned
        # process of its own cost 2-4 s of imports per step, 20-40 s of 2 cores for the 8 models' rebuild.
        executor=dg.in_process_executor,
    )


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions()
