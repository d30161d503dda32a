"""Reprocessing plans turned into Dagster runs: ranged runs over the existing `images` partitions."""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg

from imago_pipeline.core.catalog import Catalog
from imago_pipeline.core.config import ImagoSettings
from imago_pipeline.core.enrichment.versions import stage_code_versions
from imago_pipeline.core.model_store import production_tag
from imago_pipeline.core.reprocessing import StaleGroup
from imago_pipeline.defs.batching import PartitionRange, contiguous_ranges
from imago_pipeline.defs.enrichment.assets import image_partitions


def current_code_versions(settings: ImagoSettings, catalog: Catalog) -> dict[str, str]:
    """Every stage's current code version, the classifier's read live from the registry (a promotion happens
    while a code location keeps running)."""
    from training.registry import BASELINE

    return stage_code_versions(settings, production_tag(catalog, BASELINE))


@dataclass(frozen=True)
class PlannedRun:
    stages: tuple[str, ...]
    batch: PartitionRange


def plan_reprocessing(groups: list[StaleGroup], instance: dg.DagsterInstance, batch_size: int) -> list[PlannedRun]:
    """Ranged runs over existing partitions, oldest images first; images never seen by Dagster are added."""
    order = instance.get_dynamic_partitions(image_partitions.name)
    known = set(order)
    missing = [str(i) for g in groups for i in g.image_ids if str(i) not in known]
    if missing:
        instance.add_dynamic_partitions(image_partitions.name, missing)
        order = order + missing
    runs = []
    for group in groups:
        targets = {str(i) for i in group.image_ids}
        runs += [PlannedRun(group.stages, batch) for batch in contiguous_ranges(order, targets, batch_size)]
    return runs
