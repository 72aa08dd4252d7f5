"""Pausing the publisher: while paused, accepted events go to the spool and the relay waits.

The switch lives in the database so that every worker and instance obeys it; each relay round
(SPOOL_RELAY_INTERVAL) reads it.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.audit.trail import Actor, AuditEntry
from app.database.schema import ServiceFlag

FLAG = "publisher_paused"


class PauseSwitch:
    """The shared `publisher_paused` flag; `paused` is this process's latest reading of it.

    `refresh` and `set` touch the database (synchronous; call them through asyncio.to_thread).
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.paused = False
        self._changes = 0  # a reading older than our own latest change must not overwrite it

    def refresh(self) -> bool:
        changes = self._changes
        with Session(self.engine) as session:
            row = session.get(ServiceFlag, FLAG)
            if changes == self._changes:
                self.paused = bool(row and row.enabled)
            return self.paused

    def set(self, paused: bool, actor: Actor) -> None:
        """Pause or resume, recorded in the audit trail in the same transaction."""
        try:
            self._write(paused, actor)
        except IntegrityError:  # the flag's first write raced another instance's: it exists now
            self._write(paused, actor)
        # After the commit: a refresh that read before it sees the counter moved and drops its reading.
        self._changes += 1
        self.paused = paused

    def _write(self, paused: bool, actor: Actor) -> None:
        with Session(self.engine) as session, session.begin():
            row = session.get(ServiceFlag, FLAG, with_for_update=True)
            before = bool(row and row.enabled)
            if row is None:
                session.add(ServiceFlag(name=FLAG, enabled=paused, updated_at=datetime.now(UTC)))
            else:
                row.enabled, row.updated_at = paused, datetime.now(UTC)
            action = "publisher.pause" if paused else "publisher.resume"
            AuditEntry(actor, action, FLAG, {"paused": before}, {"paused": paused}).add(session)
