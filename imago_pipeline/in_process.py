"""Running the pipeline in this process (for `imago ingest`, the demo and the benchmark).

It uses the same Dagster instance (DAGSTER_HOME), partitions, job and batching as the sensor-launched
runs, so what the CLI processed shows in the Dagster UI like any other run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import dagster as dg

from imago_pipeline.core.config import ImagoSettings
from imago_pipeline.dagster_instance import get_instance, prepare_dagster_home  # noqa: F401  (the CLI's entry)
from imago_pipeline.defs.batching import PartitionRange, contiguous_ranges, plan_ranges, split_new_and_known

# The event log keeps everything; the terminal only needs warnings (the CLI prints its own progress).
QUIET_CONSOLE = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


@dataclass(frozen=True)
class BatchRun:
    keys: list[str]
    run_id: str
    success: bool


def process_images(image_ids: Sequence[int], *, settings: ImagoSettings, instance: dg.DagsterInstance,
                   batch_size: int | None = None, on_batch: Callable[[BatchRun], None] | None = None,
                   owner: str | None = None) -> list[BatchRun]:
    """Add the images as partitions and materialize them in ranged runs of `batch_size`, in this process.

    Each batch is claimed first (images another live worker holds are left to it); `owner` is the process
    claim under which they were registered (`imago ingest`), so they can be taken back from it."""
    from imago_pipeline.defs.enrichment.assets import image_partitions

    keys = [str(i) for i in image_ids]
    new_keys, known_keys = split_new_and_known(instance, image_partitions.name, keys)
    if new_keys:
        instance.add_dynamic_partitions(image_partitions.name, new_keys)
    batches = [(None, b) for b in plan_ranges(new_keys, known_keys, batch_size or settings.batch_size)]
    return _run_claimed(batches, settings=settings, instance=instance, on_batch=on_batch, owner=owner)


def _run_claimed(batches: Sequence[tuple[Sequence[str] | None, PartitionRange]], *, settings: ImagoSettings,
                 instance: dg.DagsterInstance, on_batch: Callable[[BatchRun], None] | None,
                 owner: str | None = None, extra_tags: dict[str, str] | None = None) -> list[BatchRun]:
    """Run each (stages or None for all, batch) in this process: its images claimed under a run claim, the
    run tagged with the claim and this process (so a `kill -9` here is noticed and its images requeued), one
    worker pool for every batch, shut down at the end."""
    from imago_pipeline.core.catalog import Catalog
    from imago_pipeline.core.claims import CLAIM_TAG, OWNER_TAG, process_claim, run_claim
    from imago_pipeline.core.parallel import worker_pool
    from imago_pipeline.definitions import build_definitions

    catalog = Catalog.connect(settings.catalog_url)
    job = build_definitions(settings).resolve_job_def("process_images")
    me = process_claim()
    runs = []
    with worker_pool(settings.workers):
        for stages, batch in batches:
            claim = run_claim()
            claimed = {str(i) for i in catalog.work.claim([int(k) for k in batch.keys], claim, owner=owner)}
            parts = [batch] if claimed == set(batch.keys) else \
                contiguous_ranges(batch.keys, claimed, len(batch.keys)) if batch.ranged else []
            for part in parts:
                result = job.execute_in_process(
                    instance=instance, tags={**part.tags, **(extra_tags or {}), CLAIM_TAG: claim, OWNER_TAG: me},
                    partition_key=part.partition_key, raise_on_error=False, run_config=QUIET_CONSOLE,
                    asset_selection=[dg.AssetKey(s) for s in stages] if stages else None)
                run = BatchRun(keys=part.keys, run_id=result.run_id, success=result.success)
                runs.append(run)
                if on_batch:
                    on_batch(run)
    return runs


def reprocess_stale(*, settings: ImagoSettings, instance: dg.DagsterInstance, batch_size: int | None = None,
                    dry_run: bool = False, on_batch: Callable[[BatchRun], None] | None = None, plan_filters=None,
                    on_plan: Callable[[Any], None] | None = None):
    """Re-materialize only the stale stages (and what depends on them) of the images that need it.

    With `plan_filters` ({"filters", "budget", "include_stale", "include_failed"}), the nightly batch's
    planner chooses instead: stale and failed images within the filters and budget, with bounded retries
    (and dead letters past them, also when nothing is left to run); `on_plan` is given its `BatchPlan`.
    """
    from imago_pipeline.core.catalog import Catalog
    from imago_pipeline.core.claims import reconcile
    from imago_pipeline.core.reprocessing import (
        BatchPlan,
        apply_batch_plan,
        plan_as_groups,
        plan_batch_reprocessing,
        stale_groups,
    )
    from imago_pipeline.dagster_internals import claim_alive
    from imago_pipeline.defs.reprocessing.planning import current_code_versions, plan_reprocessing

    catalog = Catalog.connect(settings.catalog_url)
    current = current_code_versions(settings, catalog)
    alive = partial(claim_alive, instance)
    if plan_filters is None:  # every stale image, and those a dead run or process left unfinished
        stranded = reconcile(catalog, alive, max_retries=settings.reprocess_max_retries,
                             grace_s=settings.claim_grace_s, dry_run=dry_run)
        groups = stale_groups(catalog, current) + plan_as_groups(BatchPlan(stranded=stranded.requeued))
    else:
        plan = plan_batch_reprocessing(catalog, current, max_retries=settings.reprocess_max_retries,
                                       claim_alive=alive, claim_grace_s=settings.claim_grace_s, **plan_filters)
        groups = plan_as_groups(plan)
        if on_plan is not None:
            on_plan(plan)
        if not dry_run:
            apply_batch_plan(catalog, plan, backoff_s=settings.reprocess_backoff_s, for_sensor=False)
    if dry_run:
        return groups, []
    batches = [(planned.stages, planned.batch) for planned in plan_reprocessing(groups, instance,
                                                                             batch_size or settings.batch_size)]
    runs = _run_claimed(batches, settings=settings, instance=instance, on_batch=on_batch,
                        extra_tags={"imago/reprocess": "stale"})
    return groups, runs
