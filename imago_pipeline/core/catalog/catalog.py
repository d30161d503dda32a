"""The catalog database, and one store per concern on top of it.

`Catalog` owns the engine and sessions; what lives in the database is reached by concern:
`clients` (API clients, keys, authentication), `work` (the queue: claims, requeues, dead letters,
finishing), `results` (what the stages found, checks, tags, search), `feedback` (predictions' metadata and
users' feedback), `model_versions` (the classifier registry's rows), `audit_log` and `blob_references`
(which stored files rows point at). `for_tenant(id)` is the tenant-scoped view the API gets after
authentication.
"""

from __future__ import annotations

import time
from contextlib import AbstractContextManager

from sqlalchemy import Connection, Engine
from sqlalchemy.orm import Session, sessionmaker

from imago_pipeline.core.catalog.audit import AuditLog
from imago_pipeline.core.catalog.clients import ClientStore
from imago_pipeline.core.catalog.db import make_engine, migrate
from imago_pipeline.core.catalog.erasures import PendingErasures
from imago_pipeline.core.catalog.feedback import FeedbackStore
from imago_pipeline.core.catalog.model_versions import ModelVersionStore
from imago_pipeline.core.catalog.references import BlobReferences
from imago_pipeline.core.catalog.results import ResultStore
from imago_pipeline.core.catalog.tenant import TenantCatalog
from imago_pipeline.core.catalog.work import WorkQueue


class Catalog:
    def __init__(self, engine: Engine, *, migrated: bool = True):
        self.engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self._migrated = migrated
        self.clients = ClientStore(self)
        self.work = WorkQueue(self)
        self.results = ResultStore(self)
        self.feedback = FeedbackStore(self)
        self.model_versions = ModelVersionStore(self)
        self.audit_log = AuditLog(self)
        self.pending_erasures = PendingErasures(self)
        self.blob_references = BlobReferences(self)

    @classmethod
    def connect(cls, url: str) -> Catalog:
        engine = make_engine(url)
        migrate(engine)
        return cls(engine)

    @classmethod
    def open(cls, url: str) -> Catalog:
        """A catalog that connects (and migrates) on first use: a service can start while the database is
        down, report itself unhealthy, and work as soon as the database is back."""
        return cls(make_engine(url), migrated=False)

    def session(self) -> Session:
        self._ensure_migrated()
        return self._sessions()

    def begin(self) -> AbstractContextManager[Connection]:
        """A connection in a transaction, without the ORM: for the hot paths (an upload, authentication),
        where a session's bookkeeping costs more than the statements."""
        self._ensure_migrated()
        return self.engine.begin()

    def _ensure_migrated(self) -> None:
        if not self._migrated:
            migrate(self.engine)
            self._migrated = True

    def dispose(self) -> None:
        self.engine.dispose()

    def scrub(self) -> None:
        """After an erasure on SQLite, leave nothing of the deleted rows in the database files: merge the
        full-text index (a delete only marks its words deleted), then checkpoint the write-ahead log into
        the database (whose freed pages `secure_delete` zeroed) and truncate it. Postgres reuses dead rows'
        space once autovacuum has run."""
        if self.engine.dialect.name != "sqlite":
            return
        with self.engine.connect() as connection:
            connection.exec_driver_sql("INSERT INTO image_search(image_search) VALUES('optimize')")
            connection.commit()
            for _ in range(50):  # a reader in another process can hold the log for a moment
                busy, _log, _done = connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").one()
                if not busy:
                    return
                time.sleep(0.1)

    def for_tenant(self, tenant_id: int) -> TenantCatalog:
        return TenantCatalog(self, tenant_id)
