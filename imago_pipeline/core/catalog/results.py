"""What the enrichment stages found: their rows, per-image stage status, checks, tags and the search index."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import delete, func, insert, select
from sqlalchemy.orm import Session

from imago_pipeline.core.catalog import search
from imago_pipeline.core.catalog.models import (
    Classification,
    Exif,
    Image,
    ImageCheck,
    ImageEmbedding,
    ImageStage,
    ImageTag,
    Ocr,
    Vision,
    utcnow,
)
from imago_pipeline.core.catalog.progress import announce
from imago_pipeline.core.enrichment.places import country_name

if TYPE_CHECKING:
    from imago_pipeline.core.catalog.catalog import Catalog


@dataclass(frozen=True)
class StageOutcome:
    image_id: int
    tenant_id: int
    status: str  # "done" | "failed"
    error: str | None = None
    duration_ms: float | None = None


@dataclass(frozen=True)
class CheckOutcome:
    image_id: int
    tenant_id: int
    passed: bool
    detail: str | None = None


class ResultStore:
    def __init__(self, catalog: Catalog):
        self.catalog = catalog

    def save_stage(self, stage: str, outcomes: Sequence[StageOutcome], table: type[Any] | None = None,
                   rows: Sequence[dict[str, Any]] = (), run_id: str | None = None,
                   code_version: str | None = None) -> None:
        """Replace a batch's enrichment rows (in `table`) and per-image stage status, in one transaction.

        Bulk delete-then-insert: re-processing an image replaces its rows, and a batch costs a handful of
        statements instead of a round trip per image. An image erased while its batch worked is left out
        (its rows would break the foreign key and fail the whole batch's stage).
        """
        now = utcnow()
        with self.catalog.session() as session:
            present = _present(session, [o.image_id for o in outcomes])
            outcomes = [o for o in outcomes if o.image_id in present]
            rows = [row for row in rows if row["image_id"] in present]
            ids = [o.image_id for o in outcomes]
            if table is not None:
                session.execute(delete(table).where(table.image_id.in_(ids)))
                if rows:
                    session.execute(insert(table), list(rows))
            session.execute(delete(ImageStage).where(ImageStage.image_id.in_(ids), ImageStage.stage == stage))
            if outcomes:
                session.execute(insert(ImageStage), [
                    dict(image_id=o.image_id, tenant_id=o.tenant_id, stage=stage, status=o.status, error=o.error,
                         duration_ms=o.duration_ms, run_id=run_id, code_version=code_version, updated_at=now)
                    for o in outcomes])
            announce(session, ids)
            session.commit()

    def embeddings(self, image_ids: Sequence[int]) -> dict[int, ImageEmbedding]:
        """The stored embeddings of these images (any tenant: the pipeline's view)."""
        with self.catalog.session() as session:
            return {row.image_id: row for row in session.scalars(
                select(ImageEmbedding).where(ImageEmbedding.image_id.in_(list(image_ids))))}

    def label_counts(self) -> dict[str, int]:
        """Images per current classification label."""
        with self.catalog.session() as session:
            rows = session.execute(select(Classification.label, func.count()).group_by(Classification.label))
            return {label: int(count) for label, count in rows}

    def save_checks(self, check_name: str, results: Sequence[CheckOutcome]) -> None:
        """The latest result of a per-image check, replacing the previous one."""
        if not results:
            return
        now = utcnow()
        with self.catalog.session() as session:
            present = _present(session, [r.image_id for r in results])  # not an image erased meanwhile
            results = [r for r in results if r.image_id in present]
            if not results:
                return
            session.execute(delete(ImageCheck).where(ImageCheck.check_name == check_name,
                                                     ImageCheck.image_id.in_([r.image_id for r in results])))
            session.execute(insert(ImageCheck), [
                dict(image_id=r.image_id, tenant_id=r.tenant_id, check_name=check_name, passed=r.passed,
                     detail=r.detail, updated_at=now) for r in results])
            session.commit()

    def save_tags(self, tags_by_image: dict[int, tuple[int, list[str]]]) -> None:
        """Replace the tags of these images: {image_id: (tenant_id, tags)}."""
        if not tags_by_image:
            return
        with self.catalog.session() as session:
            session.execute(delete(ImageTag).where(ImageTag.image_id.in_(list(tags_by_image))))
            rows = [dict(image_id=i, tenant_id=t, tag=tag) for i, (t, tags) in tags_by_image.items()
                    for tag in dict.fromkeys(tags)]
            if rows:
                session.execute(insert(ImageTag), rows)
            session.commit()

    def refresh_search(self, image_ids: Sequence[int]) -> None:
        """Re-index what was read in these images: OCR text, vision description and tags, the place."""
        ids = list(image_ids)
        with self.catalog.session() as session:
            images = dict(session.execute(
                select(Image.id, Image.tenant_id).where(Image.id.in_(ids))).tuples().all())
            ocr = dict(session.execute(select(Ocr.image_id, Ocr.text).where(Ocr.image_id.in_(ids))).tuples().all())
            vision = {row.image_id: row for row in session.scalars(select(Vision).where(Vision.image_id.in_(ids)))}
            places = {row.image_id: row for row in session.execute(
                select(Exif.image_id, Exif.city, Exif.admin1, Exif.country_code).where(Exif.image_id.in_(ids)))}
            documents = []
            for image_id, tenant_id in images.items():
                parts: list[str | None] = [ocr.get(image_id) or ""]
                if image_id in vision:
                    parts += [vision[image_id].description, " ".join(vision[image_id].tags or [])]
                if image_id in places:
                    place = places[image_id]
                    parts += [place.city, place.admin1, country_name(place.country_code)]
                documents.append((image_id, tenant_id, "\n".join(p for p in parts if p)))
            search.replace_documents(session, documents)
            session.commit()

    def stage_statistics(self) -> list[tuple[str, str, int, float | None]]:
        """[(stage, status, images, summed duration in ms)] over the latest result of every image's stages."""
        with self.catalog.session() as session:
            return [tuple(row) for row in session.execute(
                select(ImageStage.stage, ImageStage.status, func.count(), func.sum(ImageStage.duration_ms))
                .group_by(ImageStage.stage, ImageStage.status).order_by(ImageStage.stage, ImageStage.status))]

    def stage_versions(self, stages: Sequence[str]) -> dict[int, dict[str, tuple[str, str | None]]]:
        """{image_id: {stage: (status, code_version)}} for every finished image (done or failed)."""
        with self.catalog.session() as session:
            ids = select(Image.id).where(Image.status.in_(["done", "failed"]))  # not those in work
            result: dict[int, dict[str, tuple[str, str | None]]] = {i: {} for i in session.scalars(ids)}
            rows = session.execute(select(ImageStage.image_id, ImageStage.stage, ImageStage.status,
                                          ImageStage.code_version).where(ImageStage.stage.in_(list(stages))))
            for image_id, stage, status, version in rows:
                if image_id in result:
                    result[image_id][stage] = (status, version)
            return result


def _present(session: Session, image_ids: Sequence[int]) -> set[int]:
    """Which of these images still exist."""
    return set(session.scalars(select(Image.id).where(Image.id.in_(list(image_ids))))) if image_ids else set()
