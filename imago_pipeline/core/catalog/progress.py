"""Each image's progress (its status and its stages') for live event streams, read for many images at once,
and, on Postgres, announced on commit (`NOTIFY imago_progress, '<ids>'`) so listeners need not poll.

Writers call `announce` inside the transaction that changes a status: Postgres delivers the notification
only if that transaction commits, and exactly when it does. SQLite has no such channel; its readers look
every fraction of a second instead (one query for every image watched).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from imago_pipeline.core.catalog.models import Image, ImageStage

if TYPE_CHECKING:
    from imago_pipeline.core.catalog.catalog import Catalog

CHANNEL = "imago_progress"
_PAYLOAD_BYTES = 7900  # Postgres refuses NOTIFY payloads of 8000 bytes or more
FINISHED = ("done", "failed")


@dataclass(frozen=True)
class StageProgress:
    stage: str
    status: str
    error: str | None
    run_id: str | None = None  # a stage redone (a reprocess) is a change even when its status is the same


@dataclass(frozen=True)
class Progress:
    image_id: int
    tenant_id: int
    status: str
    error: str | None
    stages: tuple[StageProgress, ...]

    @property
    def finished(self) -> bool:
        return self.status in FINISHED


def announce(session: Session, image_ids: Iterable[int]) -> None:
    """Tell listeners these images changed, when the session's transaction commits (Postgres only)."""
    if session.get_bind().dialect.name != "postgresql":
        return
    payload: list[str] = []
    for image_id in sorted(set(image_ids)):
        if sum(len(p) + 1 for p in payload) + len(str(image_id)) > _PAYLOAD_BYTES:
            session.execute(select(func.pg_notify(CHANNEL, ",".join(payload))))
            payload = []
        payload.append(str(image_id))
    if payload:
        session.execute(select(func.pg_notify(CHANNEL, ",".join(payload))))


def parse_announcement(payload: str) -> list[int]:
    return [int(part) for part in payload.split(",") if part.strip().isdigit()]


def read_progress(catalog: Catalog, image_ids: Sequence[int]) -> dict[int, Progress]:
    """The progress of these images (any tenant: callers checked ownership); erased images are absent."""
    ids = sorted(set(image_ids))
    if not ids:
        return {}
    with catalog.session() as session:
        images = session.execute(select(Image.id, Image.tenant_id, Image.status, Image.error)
                                 .where(Image.id.in_(ids))).all()
        stages: dict[int, list[StageProgress]] = {}
        for image_id, stage, status, error, run_id in session.execute(
                select(ImageStage.image_id, ImageStage.stage, ImageStage.status, ImageStage.error, ImageStage.run_id)
                .where(ImageStage.image_id.in_(ids)).order_by(ImageStage.image_id, ImageStage.stage)):
            stages.setdefault(image_id, []).append(StageProgress(stage, status, error, run_id))
    return {image_id: Progress(image_id, tenant_id, status, error, tuple(stages.get(image_id, ())))
            for image_id, tenant_id, status, error in images}
