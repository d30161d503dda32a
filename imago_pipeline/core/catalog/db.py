"""Engines and migrations: the catalog schema is owned by Alembic, applied on first use."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, exc
from sqlalchemy.engine import make_url

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
_migrated: set[str] = set()
_lock = threading.Lock()


def _sqlite_pragmas(dbapi_connection, _record) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets the API read while a Dagster run writes; the busy timeout queues writers instead of failing.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    # FULL: a commit is synced before it returns (an upload's 201 follows it). NORMAL in WAL mode lets a
    # power loss roll back the last commits: measured, the row of an upload answered for came back missing.
    cursor.execute("PRAGMA synchronous=FULL")
    # Deleted content is overwritten with zeros, not left in free pages (erasure must leave nothing).
    cursor.execute("PRAGMA secure_delete=ON")
    cursor.close()


def make_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        # SQLAlchemy 2.1 would pick psycopg 3 here; be explicit (see pyproject).
        parsed = parsed.set(drivername="postgresql+psycopg2")
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(parsed, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    # The API answers from up to 40 threads: enough pooled connections that concurrent requests do not open
    # and close overflow connections (a server process forked and ended each time: at 20 clients, 10 pooled
    # connections cost 2 ms of CPU per upload in churn).
    engine = create_engine(parsed, pool_size=30, max_overflow=10)
    event.listen(engine, "checkin", _note_idle)
    event.listen(engine, "checkout", lambda dbapi_connection, record, _proxy: _ping_if_idle(
        engine.dialect, dbapi_connection, record))
    return engine


#: A pooled connection idle for longer is pinged before use (a restarted server, a proxy's idle timeout).
PING_AFTER_IDLE_S = 1.0


def _note_idle(_dbapi_connection, record) -> None:
    record.info["idle_since"] = time.monotonic()


def _ping_if_idle(dialect, dbapi_connection, record) -> None:
    """`pool_pre_ping`, but only for connections idle over a second: under load a connection goes back to
    work within milliseconds and the ping was a round trip per request. A connection that dies while in use
    fails its statement; SQLAlchemy then discards every connection of the pool made before (the request
    answers 503) and the next ones reconnect."""
    if time.monotonic() - record.info.get("idle_since", time.monotonic()) < PING_AFTER_IDLE_S:
        return
    try:
        alive, reason = dialect.do_ping(dbapi_connection), "ping failed"  # what pool_pre_ping runs
    except Exception as error:
        alive, reason = False, str(error)
    if not alive:  # the pool discards this connection and checks out another (up to 3 times)
        raise exc.DisconnectionError(f"pooled connection unusable: {reason}")


def alembic_config(engine: Engine | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if engine is not None:
        config.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False).replace("%", "%%"))
    return config


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest revision (idempotent, once per process and URL).

    On SQLite, foreign keys are off while migrating: a migration that rebuilds a table drops the old one,
    and with foreign keys on that drop would cascade into every child table. They are checked afterwards.
    """
    key = engine.url.render_as_string(hide_password=False)
    sqlite = engine.dialect.name == "sqlite"
    with _lock:
        if key in _migrated:
            return
        with engine.connect() as connection:
            if sqlite:  # only outside a transaction does this pragma take effect
                connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
                connection.commit()
            try:
                with connection.begin():
                    config = alembic_config(engine)
                    config.attributes["connection"] = connection
                    command.upgrade(config, "head")
                if sqlite:
                    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                    if broken:
                        raise RuntimeError(f"the migration left rows without their parent: {broken[:5]}")
            finally:
                if sqlite:
                    connection.rollback()
                    connection.exec_driver_sql("PRAGMA foreign_keys=ON")
                    connection.commit()
        _migrated.add(key)
