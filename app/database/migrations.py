"""Run the alembic migrations from code (tests, `event-ingest migrate`); a step before serving."""

from __future__ import annotations

from pathlib import Path

from alembic.config import Config

from alembic import command

# An installed wheel carries the migrations inside the package (pyproject: force-include); a source
# checkout has them at the top of the repository, beside alembic.ini.
PACKAGED_SCRIPTS = Path(__file__).resolve().parent / "alembic"
CHECKOUT_SCRIPTS = Path(__file__).resolve().parents[2] / "alembic"


def scripts_directory() -> Path:
    return PACKAGED_SCRIPTS if PACKAGED_SCRIPTS.is_dir() else CHECKOUT_SCRIPTS


def alembic_config(url: str) -> Config:
    config = Config()  # no alembic.ini needed: everything it would say is set here
    config.attributes["configure_logger"] = False  # leave the caller's logging alone
    config.set_main_option("script_location", str(scripts_directory()))
    config.set_main_option("path_separator", "os")
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """`alembic upgrade head` against `url`. Call it outside a running event loop (or in a thread)."""
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str = "base") -> None:
    command.downgrade(alembic_config(url), revision)
