"""Which images need which stages again: planning only (the runs that redo them are the orchestrator's).

A stage is stale for an image when the catalog has no result for it or the result was made by another code
version than the asset's current one (logic, Tesseract and languages, vision model and prompt). Everything
downstream of a stale stage is redone with it. Used by `imago reprocess --stale` and the
`stale_reprocess_sensor`, and with failed images (bounded retries, then a dead letter) by the nightly batch
reprocessing, which requeues them for the upload sensor.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from imago_pipeline.core.catalog import Catalog
from imago_pipeline.core.claims import BULK_PRIORITY, plan_reconciliation
from imago_pipeline.core.enrichment.batch import STAGES, with_downstream


@dataclass(frozen=True)
class StaleGroup:
    stages: tuple[str, ...]  # what to materialize: the stale stages, what depends on them, image_summary
    image_ids: list[int]


def stale_groups(catalog: Catalog, current: dict[str, str], *, only: tuple[str, ...] = STAGES) -> list[StaleGroup]:
    """Images whose stages (among `only`) are missing or were made by another code version than the
    `current` one ({stage: code version}), grouped by what to redo: those stages and what reads them."""
    groups: dict[tuple[str, ...], list[int]] = defaultdict(list)
    for image_id, stages in sorted(catalog.results.stage_versions(STAGES).items()):
        stale = {s for s in only if s not in stages or stages[s][1] != current[s]}
        if stale:
            groups[_redo(stale)].append(image_id)
    return [StaleGroup(stages, ids) for stages, ids in sorted(groups.items())]


def _redo(stages) -> tuple[str, ...]:
    """The stages and what reads them within an image (the SQL models downstream are not per image)."""
    return tuple(sorted(with_downstream(stages)))


@dataclass(frozen=True)
class ReprocessFilters:
    """Which images a batch reprocessing may touch; empty means all."""

    tenant_id: int | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None
    stages: tuple[str, ...] = ()  # only these stages (and what depends on them)

    @classmethod
    def resolve(cls, catalog: Catalog, *, tenant: str | None = None, created_from: datetime | str | None = None,
                created_to: datetime | str | None = None, stages=()) -> ReprocessFilters:
        """Filters as people give them (a tenant's name, ISO dates read as UTC, stage names), checked:
        ValueError names an unknown tenant or stage."""
        unknown = set(stages) - set(STAGES)
        if unknown:
            raise ValueError(f"unknown stages {', '.join(sorted(unknown))}; stages: {', '.join(STAGES)}")
        tenant_id = None
        if tenant:
            client = catalog.clients.by_name(tenant)
            if client is None:
                raise ValueError(f"no tenant named {tenant!r}")
            tenant_id = client.id
        return cls(tenant_id=tenant_id, created_from=_utc(created_from), created_to=_utc(created_to),
                   stages=tuple(stages))


def _utc(value: datetime | str | None) -> datetime | None:
    if not value:
        return None
    when = datetime.fromisoformat(value) if isinstance(value, str) else value
    return when if when.tzinfo else when.replace(tzinfo=UTC)


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


def plan_batch_reprocessing(catalog: Catalog, current: dict[str, str], *, filters: ReprocessFilters, budget: int,
                            max_retries: int, include_stale: bool = True, include_failed: bool = True,
                            claim_alive: Callable[[str], bool] | None = None, claim_grace_s: float = 120,
                            now: datetime | None = None) -> BatchPlan:
    """Stranded, stale and failed images, oldest first, at most `budget` of them.

    A failed image is retried `max_retries` times (each retry counts one attempt and sets the earliest
    next one); past that it is dead-lettered: it stays failed with its reason and is not retried again
    until someone asks (`POST /images/{id}/reprocess`). With `claim_alive`, images taken into work by a run
    or process that is gone (`claims.reconcile`) come first, with their unfinished stages.
    """
    now = now or datetime.now(UTC)
    wanted = set(filters.stages or STAGES)
    plan, candidates = BatchPlan(), []  # (created_at, image_id, kind, stages)
    if claim_alive is not None and (include_failed or include_stale):
        stranded = plan_reconciliation(catalog.work.in_progress(claimed_before=now - timedelta(seconds=claim_grace_s)),
                                       claim_alive, max_retries=max_retries)
        images = catalog.work.images_by_id([*stranded.requeued, *stranded.dead_lettered])
        keep = {i for i, image in images.items() if _matches(image, filters)}
        plan.stranded_dead = [i for i in stranded.dead_lettered if i in keep]
        candidates += [(datetime.min.replace(tzinfo=UTC), i, "stranded", stages)
                       for i, stages in stranded.requeued.items() if i in keep]
    if include_failed:
        for image, failed_stages in catalog.work.failed(tenant_id=filters.tenant_id,
                                                          created_from=filters.created_from,
                                                          created_to=filters.created_to):
            failing = set(failed_stages or STAGES)
            if not failing & wanted:
                continue
            if image.attempts >= max_retries:
                plan.dead_lettered.append(image.id)
                continue
            if image.next_attempt_at is not None and image.next_attempt_at > now:
                plan.waiting += 1
                continue
            candidates.append((image.created_at, image.id, "retry", _redo(failing & wanted)))
    if include_stale:
        groups = stale_groups(catalog, current, only=tuple(s for s in STAGES if s in wanted))
        ids = [i for g in groups for i in g.image_ids]
        images = catalog.work.images_by_id(ids)
        retrying = {c[1] for c in candidates}
        for group in groups:
            for image_id in group.image_ids:
                found = images.get(image_id)
                if (found is None or image_id in retrying or found.status != "done"
                        or not _matches(found, filters)):
                    continue
                candidates.append((found.created_at, image_id, "stale", group.stages))
    candidates.sort(key=lambda c: (c[0], c[1]))
    for _, image_id, kind, stages in candidates[:budget]:
        {"retry": plan.retries, "stale": plan.stale, "stranded": plan.stranded}[kind][image_id] = stages
    plan.deferred = max(0, len(candidates) - budget)
    return plan


def apply_batch_plan(catalog: Catalog, plan: BatchPlan, *, backoff_s: int, now: datetime | None = None,
                     for_sensor: bool = True) -> None:
    """Record retries and dead letters and requeue the planned images for the upload sensor (or, with
    `for_sensor=False`, leave the running to the caller)."""
    now = now or datetime.now(UTC)
    if plan.stranded or plan.stranded_dead:
        catalog.work.requeue_stranded(plan.stranded, plan.stranded_dead)
    if plan.dead_lettered:
        catalog.work.dead_letter(plan.dead_lettered)
    images = catalog.work.images_by_id(plan.retries)
    retries = {i: now + timedelta(seconds=backoff_s * 2 ** (images[i].attempts or 0)) for i in plan.retries
               if i in images}
    catalog.work.requeue({**plan.stale, **plan.retries}, retries=retries, for_sensor=for_sensor,
                         priority=BULK_PRIORITY)


def plan_as_groups(plan: BatchPlan) -> list[StaleGroup]:
    """The planned images grouped by the stages they redo (for in-process runs)."""
    groups: dict[tuple[str, ...], list[int]] = defaultdict(list)
    for image_id, stages in sorted({**plan.stale, **plan.retries, **plan.stranded}.items()):
        groups[stages].append(image_id)
    return [StaleGroup(stages, ids) for stages, ids in sorted(groups.items())]


def _matches(image, filters: ReprocessFilters) -> bool:
    return ((filters.tenant_id is None or image.tenant_id == filters.tenant_id)
            and (filters.created_from is None or image.created_at >= filters.created_from)
            and (filters.created_to is None or image.created_at < filters.created_to))
