"""Engine set-up for SQLite (WAL, durable commits) and PostgreSQL, and the schema check at start."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, inspect
from sqlalchemy.engine import make_url

from app.database.schema import Base


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
        options = {} if durable else {"connect_args": {"options": "-c synchronous_commit=off"}}
        return create_engine(url, pool_pre_ping=True, pool_size=5, max_overflow=10, **options)
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


def check_schema(engine: Engine) -> None:
    """Refuse to start on a database without our tables, with the command that fixes it."""
    present = set(inspect(engine).get_table_names())
    missing = sorted(set(Base.metadata.tables) - present)
    if missing:
        url = engine.url.render_as_string(hide_password=True)
        raise DatabaseNotMigratedError(
            f"database {url} lacks tables {', '.join(missing)}: run `event-ingest migrate` first"
        )
