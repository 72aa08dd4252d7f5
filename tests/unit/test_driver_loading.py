"""A worker on SQLite never loads PostgreSQL's driver (psycopg and its C extension: ~9 MB of an idle
worker's memory); only a PostgreSQL engine loads it, through SQLAlchemy."""

from __future__ import annotations

from pathlib import Path

from tests.fresh_interpreter import run_probe

_PROBE = """
import sys
from app.config.settings import load_settings
from app.factory import create_app
create_app(load_settings(_env_file=None, kafka_brokers="127.0.0.1:1"))
print("psycopg" in sys.modules)
"""


def test_creating_the_app_on_sqlite_does_not_load_psycopg(tmp_path: Path) -> None:
    assert run_probe(_PROBE, tmp_path) == ["False"]
