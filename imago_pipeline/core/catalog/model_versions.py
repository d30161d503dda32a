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

    def promote(self, version: str, *, replacing: str | None = None) -> None:
        """Make `version` production, retiring the current one, in one transaction. An unknown version is
        refused (`KeyError`; it used to retire production and leave none). With `replacing`, only while that
        version is still production (`StaleGate`): a candidate gated against a model that was replaced
        since (another retraining promoted first) is not promoted over the newer one."""
        with self.catalog.session() as session:
            if session.scalar(select(ModelVersion.id).where(ModelVersion.version == version)) is None:
                raise KeyError(f"no model version {version!r}")
            retired = session.execute(update(ModelVersion).where(
                ModelVersion.status == "production",
                *([ModelVersion.version == replacing] if replacing is not None else []))
                .values(status="retired").returning(ModelVersion.version)).scalars().all()
            if replacing is not None and not retired:
                session.rollback()
                current = self.production()
                raise StaleGate(f"{version} was gated against {replacing}, but production is now "
                                f"{current.version if current else 'none'}: retrain to compare with it")
            session.execute(update(ModelVersion).where(ModelVersion.version == version)
                            .values(status="production", promoted_at=utcnow()))
            session.commit()


class StaleGate(RuntimeError):
    """The production model changed between a candidate's gate and its promotion."""
