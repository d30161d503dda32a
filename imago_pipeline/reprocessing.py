"""Which images need which stages again, and the runs that redo them.

A stage is stale for an image when the catalog has no result for it or the result was made by another code
version than the asset's current one (logic, Tesseract and languages, vision model and prompt). Everything
downstream of a stale stage is redone with it. Used by `imago reprocess --stale` and the
`stale_reprocess_sensor`.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import dagster as dg

from imago_pipeline.batching import Batch, contiguous_batches
from imago_pipeline.catalog import Catalog
from imago_pipeline.defs.images.assets import STAGES, image_partitions


@dataclass(frozen=True)
class StaleGroup:
    stages: tuple[str, ...]  # what to materialize: the stale stages, what depends on them, image_summary
    image_ids: list[int]


def current_code_versions(asset_graph, catalog: Catalog) -> dict[str, str]:
    """The graph's code versions, except classification's, which follows the registry's production model
    live (a promotion happens while a code location keeps running)."""
    from imago_pipeline.defs.images.assets import classification_code_version
    from training.registry import production_model_tag

    versions = {stage: asset_graph.get(dg.AssetKey(stage)).code_version for stage in STAGES}
    versions["classification"] = classification_code_version(production_model_tag(catalog))
    return versions


def stale_groups(catalog: Catalog, asset_graph, *, only: tuple[str, ...] = STAGES,
                 current: dict[str, str] | None = None) -> list[StaleGroup]:
    """Images whose stages (among `only`) are missing or were made by another code version than the current."""
    current = current or current_code_versions(asset_graph, catalog)
    groups: dict[tuple[str, ...], list[int]] = defaultdict(list)
    for image_id, stages in sorted(catalog.stage_versions(STAGES).items()):
        stale = {s for s in only if s not in stages or stages[s][1] != current[s]}
        if stale:
            selection = dg.AssetSelection.assets(*stale).downstream().resolve(asset_graph)
            groups[tuple(sorted(k.to_user_string() for k in selection))].append(image_id)
    return [StaleGroup(stages, ids) for stages, ids in sorted(groups.items())]


@dataclass(frozen=True)
class PlannedRun:
    stages: tuple[str, ...]
    batch: Batch


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
        runs += [PlannedRun(group.stages, batch) for batch in contiguous_batches(order, targets, batch_size)]
    return runs
