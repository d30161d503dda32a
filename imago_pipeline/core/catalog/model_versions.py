"""The classifier registry's rows: a version's status, metrics, card and where its artifact is. Exactly one
version is `production` at a time (a promotion retires the previous one in the same transaction)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import func, select, update

from imago_pipeline.core.catalog.models import ModelVersion, utcnow

if TYPE_CHECKING:
    from imago_pipeline.core.catalog.catalog import Catalog


class ModelVersionStore:
    def __init__(self, catalog: Catalog):
        self.catalog = catalog

    def count(self) -> int:
        with self.catalog.session() as session:
            return session.scalar(select(func.count()).select_from(ModelVersion)) or 0

    def add(self, row: ModelVersion) -> None:
        with self.catalog.session() as session:
            session.add(row)
            session.commit()

    def get(self, version: str) -> ModelVersion | None:
        with self.catalog.session() as session:
            return session.scalar(select(ModelVersion).where(ModelVersion.version == version))

    def all(self) -> list[ModelVersion]:
        with self.catalog.session() as session:
            return list(session.scalars(select(ModelVersion).order_by(ModelVersion.id)))

    def production(self) -> ModelVersion | None:
        with self.catalog.session() as session:
            return session.scalar(select(ModelVersion).where(ModelVersion.status == "production"))

    def promote(self, version: str) -> None:
        with self.catalog.session() as session:
            session.execute(update(ModelVersion).where(ModelVersion.status == "production")
                            .values(status="retired"))
            session.execute(update(ModelVersion).where(ModelVersion.version == version)
                            .values(status="production", promoted_at=utcnow()))
            session.commit()
