"""Audit entries: written in the same transaction as the change they describe, logged once it
committed, and paged through by `GET /admin/audit`.

The stores that make admin changes (routing rules, API keys, the pause switch) take an `AuditEntry`
and add it in their own transaction (`add`), so a change and its entry are never one without the
other. Secrets never reach an entry: keys appear by id and name only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, event, select
from sqlalchemy.orm import Session

from app.database.schema import StoredAuditEntry

logger = logging.getLogger("app.audit")


@dataclass(frozen=True, slots=True)
class Actor:
    """Who asked for a change: the API key (id and name, never the secret) and the request."""

    key_id: str
    key_name: str
    request_id: str | None = None


SYSTEM = Actor("system", "system")  # a change the service makes itself, or a script with no API key


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One admin change. `action` is `<what>.<verb>`, e.g. `routing_rule.update`, `api_key.revoke`."""

    actor: Actor
    action: str
    target: str | None
    before: Any = None
    after: Any = None

    def add(self, session: Session) -> None:
        """Add this entry to the caller's transaction; it is logged once that commits."""
        event.listen(session, "after_commit", lambda _: self.log(), once=True)
        session.add(
            StoredAuditEntry(
                at=datetime.now(UTC),
                key_id=self.actor.key_id,
                key_name=self.actor.key_name,
                request_id=self.actor.request_id,
                action=self.action,
                target=self.target,
                before=self.before,
                after=self.after,
            )
        )

    def log(self) -> None:
        """The entry as a structured log line."""
        logger.info(
            "admin change",
            extra={
                "audit_action": self.action,
                "audit_target": self.target,
                "key_id": self.actor.key_id,
                "key_name": self.actor.key_name,
                "request_id": self.actor.request_id,
                "before": self.before,
                "after": self.after,
            },
        )


@dataclass(frozen=True, slots=True)
class AuditFilter:
    action: str | None = None
    target: str | None = None
    key_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None


class AuditTrail:
    """The `audit_log` table (synchronous; callers use asyncio.to_thread)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def record(self, entry: AuditEntry) -> None:
        """An entry for a change that has no transaction of its own here (e.g. a DLQ replay)."""
        with Session(self.engine) as session, session.begin():
            entry.add(session)

    def page(self, where: AuditFilter, limit: int, before_id: int | None = None) -> list[dict[str, Any]]:
        """Entries matching `where`, newest first, `limit` of them, older than `before_id` when given."""
        query = select(StoredAuditEntry).order_by(StoredAuditEntry.id.desc()).limit(limit)
        if before_id is not None:
            query = query.where(StoredAuditEntry.id < before_id)
        if where.action is not None:
            # `routing_rule` matches every routing_rule.* action; `routing_rule.delete` just that one.
            query = query.where(
                (StoredAuditEntry.action == where.action)
                | StoredAuditEntry.action.startswith(f"{where.action}.")
            )
        if where.target is not None:
            query = query.where(StoredAuditEntry.target == where.target)
        if where.key_id is not None:
            query = query.where(StoredAuditEntry.key_id == where.key_id)
        if where.since is not None:
            query = query.where(StoredAuditEntry.at >= where.since)
        if where.until is not None:
            query = query.where(StoredAuditEntry.at < where.until)
        with Session(self.engine) as session:
            return [_view(row) for row in session.scalars(query)]


def _view(row: StoredAuditEntry) -> dict[str, Any]:
    at = row.at if row.at.tzinfo is not None else row.at.replace(tzinfo=UTC)  # SQLite drops the zone
    return {
        "id": row.id,
        "at": at.isoformat(),
        "key_id": row.key_id,
        "key_name": row.key_name,
        "request_id": row.request_id,
        "action": row.action,
        "target": row.target,
        "before": row.before,
        "after": row.after,
    }
