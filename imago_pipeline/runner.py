"""Running the pipeline in this process (for `imago ingest`, the demo and the benchmark).

It uses the same Dagster instance (DAGSTER_HOME), partitions, job and batching as the sensor-launched
runs, so what the CLI processed shows in the Dagster UI like any other run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import dagster as dg

from imago_pipeline.batching import plan_batches, split_new_and_known
from imago_pipeline.config import ImagoSettings

EMBEDDED_DAGSTER_YAML = """\
# Written by imago for the embedded default: SQLite storage in this folder.
telemetry:
  enabled: false
nux:
  enabled: false  # no "join the community" dialog (it loads from dagster.io) on the operator's first visit
event_log_storage:
  module: imago_pipeline.dagster_storage
  class: FastSqliteEventLogStorage
  config:
    base_dir: {home}/history
run_coordinator:
  module: dagster.core.run_coordinator
  class: QueuedRunCoordinator
  config:
    dequeue_interval_seconds: 1
concurrency:
  runs:
    max_concurrent_runs: 2
  pools:
    # the vision_provider pool: one vision step at a time, so a remote provider's rate limit holds
    default_limit: 1
sensors:
  use_threads: true
  num_workers: 2
"""


def prepare_dagster_home(settings: ImagoSettings) -> Path:
    """Point DAGSTER_HOME at `.imago/dagster` unless the environment already chose one."""
    home = settings.dagster_home
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text(EMBEDDED_DAGSTER_YAML.format(home=home))
    os.environ["DAGSTER_HOME"] = str(home)
    use_batched_dagster_events()
    return home


def use_batched_dagster_events() -> None:
    """Dagster's own switches for ranged runs: write a run's materializations in one transaction and one
    planned event per asset instead of one per image (measured: 500 images in 8 s instead of 74 s)."""
    os.environ.setdefault("DAGSTER_EVENT_BATCH_SIZE", "1000")
    os.environ.setdefault("DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS", "1")


def get_instance(settings: ImagoSettings) -> dg.DagsterInstance:
    prepare_dagster_home(settings)
    return dg.DagsterInstance.get()


# The event log keeps everything; the terminal only needs warnings (the CLI prints its own progress).
QUIET_CONSOLE = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


@dataclass(frozen=True)
class BatchRun:
    keys: list[str]
    run_id: str
    success: bool


def process_images(image_ids: Sequence[int], *, settings: ImagoSettings, instance: dg.DagsterInstance,
                   batch_size: int | None = None, on_batch: Callable[[BatchRun], None] | None = None) -> list[BatchRun]:
    """Add the images as partitions and materialize them in ranged runs of `batch_size`."""
    from imago_pipeline.definitions import build_definitions
    from imago_pipeline.defs.images.assets import image_partitions

    keys = [str(i) for i in image_ids]
    new_keys, known_keys = split_new_and_known(instance, image_partitions.name, keys)
    if new_keys:
        instance.add_dynamic_partitions(image_partitions.name, new_keys)
    job = build_definitions(settings).resolve_job_def("process_images")
    runs = []
    for batch in plan_batches(new_keys, known_keys, batch_size or settings.batch_size):
        result = job.execute_in_process(instance=instance, tags=batch.tags, partition_key=batch.partition_key,
                                        raise_on_error=False, run_config=QUIET_CONSOLE)
        run = BatchRun(keys=batch.keys, run_id=result.run_id, success=result.success)
        runs.append(run)
        if on_batch:
            on_batch(run)
    return runs


def reprocess_stale(*, settings: ImagoSettings, instance: dg.DagsterInstance, batch_size: int | None = None,
                    dry_run: bool = False, on_batch: Callable[[BatchRun], None] | None = None, plan_filters=None):
    """Re-materialize only the stale stages (and what depends on them) of the images that need it.

    With `plan_filters` ({"filters", "budget", "include_stale", "include_failed"}), the nightly batch's
    planner chooses instead: stale and failed images within the filters and budget, with bounded retries.
    """
    from imago_pipeline.catalog import Catalog
    from imago_pipeline.definitions import build_definitions
    from imago_pipeline.reprocessing import (
        apply_batch_plan,
        plan_as_groups,
        plan_batch_reprocessing,
        plan_reprocessing,
        stale_groups,
    )

    defs = build_definitions(settings)
    catalog = Catalog.connect(settings.catalog_url)
    if plan_filters is None:
        groups = stale_groups(catalog, defs.resolve_asset_graph())
    else:
        plan = plan_batch_reprocessing(catalog, defs.resolve_asset_graph(), max_retries=settings.reprocess_max_retries,
                                       **plan_filters)
        groups = plan_as_groups(plan)
        if not dry_run:
            apply_batch_plan(catalog, plan, backoff_s=settings.reprocess_backoff_s, for_sensor=False)
    if dry_run:
        return groups, []
    job = defs.resolve_job_def("process_images")
    runs = []
    for planned in plan_reprocessing(groups, instance, batch_size or settings.batch_size):
        result = job.execute_in_process(
            instance=instance, tags={**planned.batch.tags, "imago/reprocess": "stale"},
            partition_key=planned.batch.partition_key, raise_on_error=False, run_config=QUIET_CONSOLE,
            asset_selection=[dg.AssetKey(stage) for stage in planned.stages])
        run = BatchRun(keys=planned.batch.keys, run_id=result.run_id, success=result.success)
        runs.append(run)
        if on_batch:
            on_batch(run)
    return groups, runs
