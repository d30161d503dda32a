"""Which images need which stages again, and the runs that redo them.

A stage is stale for an image when the catalog has no result for it or the result was made by another code
version than the asset's current one (logic, Tesseract and languages, vision model and prompt). Everything
downstream of a stale stage is redone with it. Used by `imago reprocess --stale` and the
`stale_reprocess_sensor`, and with failed images (bounded retries, then a dead letter) by the nightly batch
reprocessing, which requeues them for the upload sensor.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Callable

import dagster as dg

from imago_pipeline.defs.batching import Batch, contiguous_batches
from imago_pipeline.core.catalog import Catalog
from imago_pipeline.core.claims import plan_reconciliation
from imago_pipeline.defs.enrichment.assets import PER_IMAGE_ASSET_KEYS, STAGES, image_partitions


@dataclass(frozen=True)
class StaleGroup:
    stages: tuple[str, ...]  # what to materialize: the stale stages, what depends on them, image_summary
    image_ids: list[int]


def current_code_versions(asset_graph, catalog: Catalog) -> dict[str, str]:
    """The graph's code versions, except classification's, which follows the registry's production model
    live (a promotion happens while a code location keeps running)."""
    from imago_pipeline.defs.enrichment.assets import classification_code_version
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
            # downstream within the per-image assets: the SQL models downstream are not partitioned
            selection = (dg.AssetSelection.assets(*stale).downstream()
                         & dg.AssetSelection.assets(*PER_IMAGE_ASSET_KEYS)).resolve(asset_graph)
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


@dataclass(frozen=True)
class ReprocessFilters:
    """Which images a batch reprocessing may touch; empty means all."""

    tenant_id: int | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None
    stages: tuple[str, ...] = ()  # only these stages (and what depends on them)

    @classmethod
    def resolve(cls, catalog: Catalog, *, tenant: str | None = None, created_from: datetime | str | None = None,
                created_to: datetime | str | None = None, stages=()) -> "ReprocessFilters":
        """Filters as people give them (a tenant's name, ISO dates read as UTC, stage names), checked:
        ValueError names an unknown tenant or stage."""
        unknown = set(stages) - set(STAGES)
        if unknown:
            raise ValueError(f"unknown stages {', '.join(sorted(unknown))}; stages: {', '.join(STAGES)}")
        tenant_id = None
        if tenant:
            client = catalog.client_by_name(tenant)
            if client is None:
                raise ValueError(f"no tenant named {tenant!r}")
            tenant_id = client.id
        return cls(tenant_id=tenant_id, created_from=_utc(created_from), created_to=_utc(created_to),
                   stages=tuple(stages))


def _utc(value: datetime | str | None) -> datetime | None:
    if not value:
        return None
    when = datetime.fromisoformat(value) if isinstance(value, str) else value
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


@dataclass
class BatchPlan:
    """What one batch reprocessing requeues: {image_id: stages}, oldest images first, within the budget."""

    stale: dict[int, tuple[str, ...]] = field(default_factory=dict)
    retries: dict[int, tuple[str, ...]] = field(default_factory=dict)
    dead_lettered: list[int] = field(default_factory=list)
    # taken into work by a run (or process) that is gone: their unfinished stages, or retries run out
    stranded: dict[int, tuple[str, ...]] = field(default_factory=dict)
    stranded_dead: list[int] = field(default_factory=list)
    waiting: int = 0  # failed images whose next retry is not due yet
    deferred: int = 0  # beyond the budget: left for the next night

    @property
    def images(self) -> int:
        return len(self.stale) + len(self.retries) + len(self.stranded)


def plan_batch_reprocessing(catalog: Catalog, asset_graph, *, filters: ReprocessFilters, budget: int,
                            max_retries: int, include_stale: bool = True, include_failed: bool = True,
                            claim_alive: Callable[[str], bool] | None = None, claim_grace_s: float = 120,
                            now: datetime | None = None) -> BatchPlan:
    """Stranded, stale and failed images, oldest first, at most `budget` of them.

    A failed image is retried `max_retries` times (each retry counts one attempt and sets the earliest
    next one); past that it is dead-lettered: it stays failed with its reason and is not retried again
    until someone asks (`POST /images/{id}/reprocess`). With `claim_alive`, images taken into work by a run
    or process that is gone (`claims.reconcile`) come first, with their unfinished stages.
    """
    now = now or datetime.now(timezone.utc)
    wanted = set(filters.stages or STAGES)
    plan, candidates = BatchPlan(), []  # (created_at, image_id, kind, stages)
    if claim_alive is not None and (include_failed or include_stale):
        stranded = plan_reconciliation(catalog.in_progress_images(claimed_before=now - timedelta(seconds=claim_grace_s)),
                                       claim_alive, max_retries=max_retries)
        images = catalog.images_by_id([*stranded.requeued, *stranded.dead_lettered])
        keep = {i for i, image in images.items() if _matches(image, filters)}
        plan.stranded_dead = [i for i in stranded.dead_lettered if i in keep]
        candidates += [(datetime.min.replace(tzinfo=timezone.utc), i, "stranded", stages)
                       for i, stages in stranded.requeued.items() if i in keep]
    if include_failed:
        for image, failed_stages in catalog.failed_images(tenant_id=filters.tenant_id,
                                                          created_from=filters.created_from,
                                                          created_to=filters.created_to):
            stages = set(failed_stages or STAGES)
            if not stages & wanted:
                continue
            if image.attempts >= max_retries:
                plan.dead_lettered.append(image.id)
                continue
            if image.next_attempt_at is not None and image.next_attempt_at > now:
                plan.waiting += 1
                continue
            candidates.append((image.created_at, image.id, "retry", _with_downstream(asset_graph, stages & wanted)))
    if include_stale:
        groups = stale_groups(catalog, asset_graph, only=tuple(s for s in STAGES if s in wanted))
        ids = [i for g in groups for i in g.image_ids]
        images = catalog.images_by_id(ids)
        retrying = {c[1] for c in candidates}
        for group in groups:
            for image_id in group.image_ids:
                image = images.get(image_id)
                if (image is None or image_id in retrying or image.status != "done"
                        or not _matches(image, filters)):
                    continue
                candidates.append((image.created_at, image_id, "stale", group.stages))
    candidates.sort(key=lambda c: (c[0], c[1]))
    for _, image_id, kind, stages in candidates[:budget]:
        {"retry": plan.retries, "stale": plan.stale, "stranded": plan.stranded}[kind][image_id] = stages
    plan.deferred = max(0, len(candidates) - budget)
    return plan


def apply_batch_plan(catalog: Catalog, plan: BatchPlan, *, backoff_s: int, now: datetime | None = None,
                     for_sensor: bool = True) -> None:
    """Record retries and dead letters and requeue the planned images for the upload sensor (or, with
    `for_sensor=False`, leave the running to the caller)."""
    now = now or datetime.now(timezone.utc)
    if plan.stranded or plan.stranded_dead:
        catalog.requeue_stranded(plan.stranded, plan.stranded_dead)
    if plan.dead_lettered:
        catalog.dead_letter(plan.dead_lettered)
    images = catalog.images_by_id(plan.retries)
    retries = {i: now + timedelta(seconds=backoff_s * 2 ** (images[i].attempts or 0)) for i in plan.retries
               if i in images}
    catalog.requeue({**plan.stale, **plan.retries}, retries=retries, for_sensor=for_sensor)


def plan_as_groups(plan: BatchPlan) -> list[StaleGroup]:
    """The planned images grouped by the stages they redo (for in-process runs)."""
    groups: dict[tuple[str, ...], list[int]] = defaultdict(list)
    for image_id, stages in sorted({**plan.stale, **plan.retries, **plan.stranded}.items()):
        groups[stages].append(image_id)
    return [StaleGroup(stages, ids) for stages, ids in sorted(groups.items())]


def _with_downstream(asset_graph, stages: set[str]) -> tuple[str, ...]:
    selection = (dg.AssetSelection.assets(*stages).downstream()
                 & dg.AssetSelection.assets(*PER_IMAGE_ASSET_KEYS)).resolve(asset_graph)
    return tuple(sorted(k.to_user_string() for k in selection))


def _matches(image, filters: ReprocessFilters) -> bool:
    return ((filters.tenant_id is None or image.tenant_id == filters.tenant_id)
            and (filters.created_from is None or image.created_at >= filters.created_from)
            and (filters.created_to is None or image.created_at < filters.created_to))
