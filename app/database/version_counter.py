"""A change counter in a one-row table: bumped in the transaction of every change to a set of rows
(routing rules, event types), polled by every worker and instance to know when to reload them."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from app.database.schema import VersionCounter


def read_version(engine: Engine, table: type[VersionCounter]) -> int:
    """The counter; 0 when nothing was ever written."""
    with Session(engine) as session:
        return version_in(session, table)


def version_in(session: Session, table: type[VersionCounter]) -> int:
    row = session.get(table, 1)
    return row.version if row else 0


def bump_version(session: Session, table: type[VersionCounter], now: datetime) -> int:
    """Add one, in the caller's transaction, holding the row's lock until it ends."""
    row = session.get(table, 1, with_for_update=True)
    if row is None:
        row = table(id=1, version=0, updated_at=now)
        session.add(row)
    row.version += 1
    row.updated_at = now
    return row.version
