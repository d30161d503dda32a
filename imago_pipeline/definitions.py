"""The Dagster code location: assembles what the domain modules define."""

import dagster as dg

from imago_pipeline.config import ImagoSettings
from imago_pipeline.defs.images.assets import build_image_assets, process_images_job, uploads
from imago_pipeline.defs.images.sensors import drop_folder_sensor, stale_reprocess_sensor, upload_sensor
from imago_pipeline.defs.resources import build_resources


def build_definitions(settings: ImagoSettings | None = None) -> dg.Definitions:
    """The whole code location, with resources for `settings` (the environment's by default)."""
    settings = settings or ImagoSettings()
    return dg.Definitions(
        assets=[uploads, *build_image_assets(settings)],
        jobs=[process_images_job],
        sensors=[upload_sensor, drop_folder_sensor, stale_reprocess_sensor],
        resources=build_resources(settings),
    )


defs = build_definitions()
