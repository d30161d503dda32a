"""Synchronous predictions (their metadata only) and users' feedback on classifications: what monitoring,
retraining and the retention purge read."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, cast

from sqlalchemy import CursorResult, case, delete, func, select, update

from imago_pipeline.core.catalog.models import AuditEvent, Feedback, Image, InferenceLog

if TYPE_CHECKING:
    from imago_pipeline.core.catalog.catalog import Catalog


class FeedbackStore:
    def __init__(self, catalog: Catalog):
        self.catalog = catalog

    def log_inference(self, *, tenant_id: int | None, success: bool, latency_ms: float, model_version: str | None,
                      label: str | None = None, error: str | None = None) -> None:
        with self.catalog.session() as session:
            session.add(InferenceLog(tenant_id=tenant_id, success=success, latency_ms=latency_ms,
                                     model_version=model_version, label=label, error=(error or None) and error[:200]))
            session.commit()

    def for_training(self, since_id: int = 0) -> list[tuple[Feedback, Image]]:
        """Labelled feedback not yet used by a model, with its image (oldest first)."""
        with self.catalog.session() as session:
            rows = session.execute(
                select(Feedback, Image).join(Image, Image.id == Feedback.image_id)
                .where(Feedback.label.is_not(None), Feedback.used_in_version.is_(None), Feedback.id > since_id)
                .order_by(Feedback.id)).all()
            return [(f, i) for f, i in rows]

    def labelled(self) -> list[tuple[Feedback, Image]]:
        """Every labelled feedback item still kept (used by a model or not) with its image, oldest first."""
        with self.catalog.session() as session:
            rows = session.execute(
                select(Feedback, Image).join(Image, Image.id == Feedback.image_id)
                .where(Feedback.label.is_not(None)).order_by(Feedback.id)).all()
            return [(f, i) for f, i in rows]

    def mark_used(self, feedback_ids: Sequence[int], version: str) -> None:
        with self.catalog.session() as session:
            session.execute(update(Feedback).where(Feedback.id.in_(list(feedback_ids))).values(used_in_version=version))
            session.commit()

    def agreement_by_model(self) -> dict[str, tuple[int, int]]:
        """{model_version: (feedback items, items saying the prediction was right)}."""
        with self.catalog.session() as session:
            rows = session.execute(select(Feedback.model_version, func.count(),
                                          func.sum(case((Feedback.correct, 1), else_=0)))
                                   .where(Feedback.model_version.is_not(None)).group_by(Feedback.model_version))
            return {version: (int(total), int(agreed or 0)) for version, total, agreed in rows}

    def inference_logs(self) -> list[InferenceLog]:
        with self.catalog.session() as session:
            return list(session.scalars(select(InferenceLog)))

    def all(self) -> list[Feedback]:
        with self.catalog.session() as session:
            return list(session.scalars(select(Feedback)))

    def older_than(self, table: str, cutoff: datetime, *, delete_them: bool,
                   audit: Callable[[int], AuditEvent] | None = None) -> tuple[int, AuditEvent | None]:
        """Rows of `inference_log` or `feedback` created before `cutoff`: counted, or deleted (retention).
        With `audit(deleted)`, its audit row is added in the deletion's transaction (and returned), so no
        deletion goes unrecorded whatever happens next."""
        model = RETAINED[table]
        with self.catalog.session() as session:
            if not delete_them:
                counted = session.scalar(select(func.count()).select_from(model).where(model.created_at < cutoff))
                return counted or 0, None
            deleted = cast(CursorResult, session.execute(delete(model).where(model.created_at < cutoff))).rowcount
            event = audit(deleted) if audit is not None else None
            if event is not None:
                session.add(event)
            session.commit()
            return deleted, event


# What retention purges, by lake table name.
RETAINED: dict[str, type[InferenceLog] | type[Feedback]] = {"inference_log": InferenceLog, "feedback": Feedback}
