"""A PostgreSQL database for the benchmarks: a throwaway server with its default, durable settings
(what production runs), holding one migrated database named `ingest`."""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.database import migrations  # noqa: E402
from tests.services.postgres import PostgresServer  # noqa: E402


@contextmanager
def ingest_database() -> Iterator[str]:
    """The SQLAlchemy URL of a fresh, migrated `ingest` database; the server is removed afterwards."""
    server = PostgresServer(Path(tempfile.mkdtemp(prefix="bench-postgres-")), durable=True)
    server.start()
    try:
        admin = create_engine(server.url, isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(text("CREATE DATABASE ingest"))
        admin.dispose()
        url = make_url(server.url).set(database="ingest").render_as_string(hide_password=False)
        migrations.upgrade(url)
        yield url
    finally:
        server.remove()
