"""Engine set-up for SQLite (WAL, durable commits) and PostgreSQL, and the schema check at start."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError

from app.database.schema import Base

# A pooled connection idle this long is checked (one round trip) before it is handed out: after a
# database restart or a network drop it fails there, is replaced, and the caller never sees it. One
# in steady use is not checked: a check before every use (SQLAlchemy's pool_pre_ping) doubled the
# round trips of a small write. Were the database restarted meanwhile, one write fails. The event
# loop's connections (app.database.loop_connection) follow the same rule.
IDLE_BEFORE_PING = 1.0

# PostgreSQL's connection option for commits that do not wait for the disk (`durable=False`).
POSTGRES_NOT_WAITING_FOR_THE_DISK = "-c synchronous_commit=off"


class DatabaseNotMigratedError(RuntimeError):
    """The tables are missing: `event-ingest migrate` (alembic upgrade head) has not run against this database."""


def create_database_engine(url: str, *, durable: bool = True) -> Engine:
    """An engine for `url`; SQLite files get WAL mode and synchronous=FULL (a 2xx must survive a crash).

    `durable=False` is for writes a crash may lose without breaking a promise (idempotency keys):
    commits return without waiting for the disk (SQLite synchronous=NORMAL, PostgreSQL
    synchronous_commit=off), the database stays consistent.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        options = {} if durable else {"connect_args": {"options": POSTGRES_NOT_WAITING_FOR_THE_DISK}}
        engine = create_engine(url, pool_size=5, max_overflow=10, **options)
        _ping_idle_connections(engine)
        return engine
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(connection: Any, _record: Any) -> None:
        cursor = connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={'FULL' if durable else 'NORMAL'}")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    return engine


def _ping_idle_connections(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    @event.listens_for(engine, "checkin")
    def _checked_in(_connection: Any, record: Any) -> None:
        record.info["checked_in"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checked_out(connection: Any, record: Any, _proxy: Any) -> None:
        if time.monotonic() - record.info.get("checked_in", 0.0) < IDLE_BEFORE_PING:
            return
        try:
            engine.dialect.do_ping(connection)
        except engine.dialect.loaded_dbapi.Error as error:
            if engine.dialect.is_disconnect(error, connection, None):
                raise DisconnectionError("connection lost while idle") from error  # the pool reconnects
            raise


def check_schema(engine: Engine) -> None:
    """Refuse to start on a database without our tables, with the command that fixes it."""
    present = set(inspect(engine).get_table_names())
    missing = sorted(set(Base.metadata.tables) - present)
    if missing:
        url = engine.url.render_as_string(hide_password=True)
        raise DatabaseNotMigratedError(
            f"database {url} lacks tables {', '.join(missing)}: run `event-ingest migrate` first"
        )
