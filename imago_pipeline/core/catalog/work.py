"""The work queue: images taken into work by runs (claims), requeued, retried, dead-lettered and finished.

Work is found by status, never by "ids after the last one seen" (ids commit out of order on Postgres);
see `imago_pipeline/core/claims.py` for how claims whose worker is gone are found.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from sqlalchemy import case, func, select, update

from imago_pipeline.core.catalog.models import Image, ImageStage, utcnow
from imago_pipeline.core.catalog.progress import announce

if TYPE_CHECKING:
    from imago_pipeline.core.catalog.catalog import Catalog

CLAIMABLE = ("pending", "requeued")  # waiting for the upload sensor
IN_PROGRESS = ("queued", "processing")  # taken into work, not finished


def _chunks(items: list, size: int):
    for start in range(0, len(items), size):
        yield items[start:start + size]


class WorkQueue:
    def __init__(self, catalog: Catalog):
        self.catalog = catalog
        self.engine = catalog.engine

    def ids_with_status(self, *statuses: str, limit: int = 1000) -> list[int]:
        """Image ids in these statuses, oldest first (tests and operators; the sensor claims, see take_work)."""
        with self.catalog.session() as session:
            return list(session.scalars(select(Image.id).where(Image.status.in_(statuses)).order_by(Image.id)
                                        .limit(limit)))

    def settled_before(self, image_ids: Iterable[int], cutoff: datetime) -> list[int]:
        """Of these images, those finished (done or failed, held by no run) and unchanged since `cutoff`:
        what no run will touch unless someone asks again (an erasure, a reprocess request, a retry)."""
        found: list[int] = []
        with self.catalog.session() as session:
            for chunk in _chunks(sorted(set(image_ids)), 5000):
                found += session.scalars(select(Image.id).where(
                    Image.id.in_(chunk), Image.status.in_(("done", "failed")), Image.claim.is_(None),
                    Image.updated_at < cutoff))
        return sorted(found)

    def existing(self, image_ids: Iterable[int]) -> set[int]:
        """Of these image ids, those in the catalog (the others were erased, or never were)."""
        found: set[int] = set()
        with self.catalog.session() as session:
            for chunk in _chunks(sorted(set(image_ids)), 5000):
                found.update(session.scalars(select(Image.id).where(Image.id.in_(chunk))))
        return found

    def images_by_id(self, image_ids: Iterable[int]) -> dict[int, Image]:
        ids = list(image_ids)
        with self.catalog.session() as session:
            return {image.id: image for image in session.scalars(select(Image).where(Image.id.in_(ids)))}

    def take(self, limit: int, claim: str, *, min_priority: int | None = None
             ) -> list[tuple[int, str, tuple[str, ...] | None, int]]:
        """Take up to `limit` pending or requeued images into work under `claim` (so commit order cannot hide
        an image, and two takers never get the same one). Higher priorities first, then new uploads before
        reprocessing requests, oldest first; `min_priority` leaves lower ones waiting. Returns
        [(image_id, status it had, stages to redo or None for all, priority)]."""
        waiting = select(Image.id, Image.status, Image.requeue_stages, Image.priority).where(
            Image.status.in_(CLAIMABLE))
        if min_priority is not None:
            waiting = waiting.where(Image.priority >= min_priority)
        waiting = waiting.order_by(Image.priority.desc(), case((Image.status == "pending", 0), else_=1),
                                   Image.updated_at, Image.id).limit(limit)
        if self.engine.dialect.name == "postgresql":
            waiting = waiting.with_for_update(skip_locked=True)
        now = utcnow()
        with self.catalog.session() as session:
            found = session.execute(waiting).all()
            taken = {row[0] for row in session.execute(
                update(Image).where(Image.id.in_([row[0] for row in found]), Image.status.in_(CLAIMABLE))
                .values(status="queued", claim=claim, claimed_at=now, started_at=now).returning(Image.id))}
            announce(session, taken)
            session.commit()
        return sorted((image_id, status, tuple(stages) if stages else None, priority or 0)
                      for image_id, status, stages, priority in found if image_id in taken)

    def assign_claims(self, taken_as: str, claims: dict[str, Sequence[int]]) -> None:
        """Give each batch of images taken under `taken_as` the claim token of the run that will process it."""
        with self.catalog.session() as session:
            for claim, image_ids in claims.items():
                session.execute(update(Image).where(Image.id.in_(list(image_ids)), Image.claim == taken_as)
                                .values(claim=claim))
            session.commit()

    def claim(self, image_ids: Sequence[int], claim: str, *, owner: str | None = None) -> list[int]:
        """Claim these images for an in-process run: any that nobody holds, or that `owner` (the process that
        registered them) holds. Images another worker holds are left out; returns those claimed."""
        free = Image.status.in_((*CLAIMABLE, "done", "failed")) | Image.claim.is_(None)
        if owner:
            free = free | (Image.claim == owner)
        with self.catalog.session() as session:
            rows = session.execute(
                update(Image).where(Image.id.in_(list(image_ids)), free)
                .values(status="queued", claim=claim, claimed_at=(now := utcnow()), started_at=now)
                .returning(Image.id)).all()
            announce(session, [row[0] for row in rows])
            session.commit()
        return sorted(row[0] for row in rows)

    def in_progress(self, *, claimed_before: datetime) -> list[tuple[int, str | None, int, dict[str, str]]]:
        """Images taken into work before `claimed_before` and not finished: (id, claim, attempts, {stage:
        status})."""
        taken = func.coalesce(Image.claimed_at, Image.updated_at)
        with self.catalog.session() as session:
            images = session.execute(select(Image.id, Image.claim, Image.attempts)
                                     .where(Image.status.in_(IN_PROGRESS), taken < claimed_before)
                                     .order_by(Image.id)).all()
            stages: dict[int, dict[str, str]] = {}
            for chunk in _chunks([i for i, _, _ in images], 500):
                for image_id, stage, status in session.execute(
                        select(ImageStage.image_id, ImageStage.stage, ImageStage.status)
                        .where(ImageStage.image_id.in_(chunk))):
                    stages.setdefault(image_id, {})[stage] = status
        return [(i, claim, attempts or 0, stages.get(i, {})) for i, claim, attempts in images]

    def requeue_stranded(self, requeued: dict[int, tuple[str, ...]], dead_lettered: Sequence[int]) -> None:
        """Images whose worker is gone: back to the queue with the stages still to do (one attempt more), or
        failed for good when their retries ran out."""
        now = utcnow()
        with self.catalog.session() as session:
            for image in session.scalars(select(Image).where(Image.id.in_([*requeued, *dead_lettered]),
                                                             Image.status.in_(IN_PROGRESS))):
                image.attempts = (image.attempts or 0) + 1
                image.claim = image.claimed_at = None
                image.updated_at = now
                if image.id in requeued:
                    image.status, image.requeue_stages = "requeued", list(requeued[image.id])
                else:
                    image.status, image.gave_up_at = "failed", now
                    image.error = (f"stranded: the runs that took it ended without finishing it "
                                   f"{image.attempts} times")
            announce(session, [*requeued, *dead_lettered])
            session.commit()

    def requeue(self, stages_by_image: dict[int, tuple[str, ...] | None], *,
                retries: dict[int, datetime] | None = None, for_sensor: bool = True,
                priority: int | None = None) -> None:
        """Queue images again for the upload sensor, each with the stages to redo (None: every stage).

        `retries` marks automatic retries of failed images: {image_id: earliest next retry}; it counts the
        attempt. With `for_sensor=False` only the retries are recorded (the caller runs the images itself).
        `priority` replaces the images' priority (background reprocessing is bulk work: 0).
        """
        now, retries = utcnow(), retries or {}
        with self.catalog.session() as session:
            for image in session.scalars(select(Image).where(Image.id.in_(list(stages_by_image)))):
                if for_sensor:
                    stages = stages_by_image[image.id]
                    image.status, image.updated_at = "requeued", now
                    image.requeue_stages = list(stages) if stages else None
                    if priority is not None:
                        image.priority = priority
                if image.id in retries:
                    image.attempts = (image.attempts or 0) + 1
                    image.next_attempt_at = retries[image.id]
            announce(session, stages_by_image)
            session.commit()

    def dead_letter(self, image_ids: Sequence[int]) -> None:
        """Stop retrying these failed images: they stay failed with their reason."""
        with self.catalog.session() as session:
            session.execute(update(Image).where(Image.id.in_(list(image_ids)), Image.gave_up_at.is_(None))
                            .values(gave_up_at=utcnow()))
            session.commit()

    def failed(self, *, tenant_id: int | None = None, created_from: datetime | None = None,
                      created_to: datetime | None = None) -> list[tuple[Image, list[str]]]:
        """Failed images not dead-lettered yet, oldest first, with the stages that failed."""
        query = select(Image).where(Image.status == "failed", Image.gave_up_at.is_(None))
        if tenant_id is not None:
            query = query.where(Image.tenant_id == tenant_id)
        if created_from is not None:
            query = query.where(Image.created_at >= created_from)
        if created_to is not None:
            query = query.where(Image.created_at < created_to)
        with self.catalog.session() as session:
            images = list(session.scalars(query.order_by(Image.created_at, Image.id)))
            failed: dict[int, list[str]] = {}
            for image_id, stage in session.execute(
                    select(ImageStage.image_id, ImageStage.stage)
                    .where(ImageStage.image_id.in_([i.id for i in images]), ImageStage.status == "failed")):
                failed.setdefault(image_id, []).append(stage)
        return [(image, sorted(failed.get(image.id, []))) for image in images]

    def finish(self, image_ids: Sequence[int], stages: Sequence[str], *,
                      claim: str | None = None) -> dict[int, Image]:
        """Set each image's overall status from its stages: failed if any failed, done if all are done.

        A run finishes only the images it holds (`claim`) or that nobody holds: an image taken again by
        another run since (a new reprocessing request) is that run's to finish."""
        with self.catalog.session() as session:
            images = {i.id: i for i in session.scalars(select(Image).where(Image.id.in_(list(image_ids))))
                      if i.claim is None or i.claim == claim}
            stage_rows = session.scalars(
                select(ImageStage).where(ImageStage.image_id.in_(list(images)), ImageStage.stage.in_(list(stages)))
            )
            by_image: dict[int, dict[str, ImageStage]] = {}
            for row in stage_rows:
                by_image.setdefault(row.image_id, {})[row.stage] = row
            now = utcnow()
            for image_id, image in images.items():
                done = by_image.get(image_id, {})
                failures = [f"{s}: {done[s].error}" for s in stages if s in done and done[s].status == "failed"]
                if failures:
                    image.status, image.error = "failed", "; ".join(failures)
                elif all(s in done and done[s].status == "done" for s in stages):
                    # a success ends the failure's retries: a later failure gets the whole budget again
                    image.status, image.error, image.attempts, image.next_attempt_at = "done", None, 0, None
                else:
                    image.status = "processing"
                image.processed_at, image.requeue_stages = now, None
                if image.status != "processing":  # finished: nobody holds it any more
                    image.claim = image.claimed_at = None
            announce(session, images)
            session.commit()
            return images
