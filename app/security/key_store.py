"""API keys created through the admin API (the `api_keys` table), and the in-memory key ring.

The ring holds every key's SHA-256 in a dict: a request's key is looked up without touching the
database, so unknown keys cost nothing. Every worker reloads the table every
API_KEYS_REFRESH_INTERVAL, so a key created or revoked on one instance works (or stops working)
everywhere within that interval; on the instance that made the change, at once.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from app.audit.trail import Actor, AuditEntry
from app.background import BackgroundLoop
from app.database.schema import StoredApiKey
from app.security.keys import ApiKey, ConfiguredApiKey, Scope, generate_key, hash_key, shown_prefix

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """A key as the admin API shows it: everything but the secret."""

    id: str
    name: str
    prefix: str
    scopes: list[str]
    event_types: list[str] | None
    rate_limit: float | None
    created_at: datetime | None
    revoked_at: datetime | None
    source: str

    def audit_view(self) -> dict[str, Any]:
        """What the audit trail keeps of a key: everything shown, never the secret or its hash."""
        return {
            "id": self.id,
            "name": self.name,
            "prefix": self.prefix,
            "scopes": self.scopes,
            "event_types": self.event_types,
            "rate_limit": self.rate_limit,
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
        }

    def to_api_key(self) -> ApiKey:
        return ApiKey(
            id=self.id,
            name=self.name,
            scopes=frozenset(Scope(scope) for scope in self.scopes),
            event_types=(frozenset(self.event_types) if self.event_types is not None else None),
            rate_limit=self.rate_limit,
            source="database",
            revoked=self.revoked_at is not None,
        )


def _record(row: StoredApiKey) -> KeyRecord:
    return KeyRecord(
        id=row.id,
        name=row.name,
        prefix=row.prefix,
        scopes=list(row.scopes),
        event_types=list(row.event_types) if row.event_types is not None else None,
        rate_limit=row.rate_limit,
        created_at=_aware(row.created_at),
        revoked_at=_aware(row.revoked_at),
        source="database",
    )


def _aware(moment: datetime | None) -> datetime | None:
    # SQLite hands timestamps back without their zone; they were written in UTC.
    return moment.replace(tzinfo=UTC) if moment is not None and moment.tzinfo is None else moment


class ApiKeyStore:
    """The `api_keys` table (synchronous; callers use asyncio.to_thread)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def create(
        self,
        name: str,
        scopes: Iterable[Scope],
        event_types: Iterable[str] | None,
        rate_limit: float | None,
        actor: Actor,
    ) -> tuple[KeyRecord, str]:
        """A new key, recorded in the audit trail in the same transaction; returns its record and
        the key itself, which is not kept anywhere."""
        key = generate_key()
        row = StoredApiKey(
            id="key_" + secrets.token_hex(6),
            name=name,
            key_sha256=hash_key(key),
            prefix=shown_prefix(key),
            scopes=sorted(str(scope) for scope in set(scopes)),
            event_types=sorted(str(kind) for kind in set(event_types)) if event_types is not None else None,
            rate_limit=rate_limit,
            created_at=datetime.now(UTC),
        )
        with Session(self.engine) as session, session.begin():
            session.add(row)
            session.flush()
            record = _record(row)
            AuditEntry(actor, "api_key.create", record.id, None, record.audit_view()).add(session)
            return record, key

    def all(self) -> list[tuple[str, KeyRecord]]:
        """Every stored key with its SHA-256, oldest first."""
        with Session(self.engine) as session:
            rows = session.scalars(select(StoredApiKey).order_by(StoredApiKey.created_at, StoredApiKey.id))
            return [(row.key_sha256, _record(row)) for row in rows]

    def revoke(self, key_id: str, actor: Actor) -> KeyRecord | None:
        """Mark a key revoked (kept, so that its use is answered "revoked") and record it in the
        audit trail; None when unknown. Revoking a revoked key changes and records nothing."""
        with Session(self.engine) as session, session.begin():
            row = session.get(StoredApiKey, key_id, with_for_update=True)
            if row is None:
                return None
            if row.revoked_at is None:
                before = _record(row).audit_view()
                row.revoked_at = datetime.now(UTC)
                AuditEntry(actor, "api_key.revoke", key_id, before, _record(row).audit_view()).add(session)
            return _record(row)


class KeyRing:
    """Every key this worker accepts: from API_KEYS and from the table, by SHA-256."""

    def __init__(self, configured: Iterable[ConfiguredApiKey], store: ApiKeyStore, interval: float) -> None:
        self.store = store
        self._configured = {item.digest(): item.to_api_key() for item in configured}
        self._keys: dict[str, ApiKey] = dict(self._configured)
        self.records: list[KeyRecord] = []
        # A failed refresh keeps the last ring; the loop tries again at the next interval.
        self._loop = BackgroundLoop(
            "api-keys-refresh", self.refresh, interval, delay_first=True, logger=logger
        )

    def lookup(self, key: str) -> ApiKey | None:
        # A dict lookup on a SHA-256 leaks nothing useful through timing: finding a key whose hash
        # collides with a stored one is as hard as finding the key.
        return self._keys.get(hash_key(key))

    @property
    def configured(self) -> list[ApiKey]:
        return list(self._configured.values())

    async def start(self) -> None:
        await self.refresh()
        self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()

    async def create(
        self,
        name: str,
        scopes: Iterable[Scope],
        event_types: Iterable[str] | None,
        rate_limit: float | None,
        actor: Actor,
    ) -> tuple[KeyRecord, str]:
        """A new key (recorded in the audit trail), usable here at once and on every other worker
        and instance within API_KEYS_REFRESH_INTERVAL; returns its record and the key itself."""
        record, key = await asyncio.to_thread(self.store.create, name, scopes, event_types, rate_limit, actor)
        await self.refresh()
        return record, key

    async def revoke(self, key_id: str, actor: Actor) -> KeyRecord | None:
        """Revoke a stored key, here at once and elsewhere within the refresh interval; None when unknown."""
        record = await asyncio.to_thread(self.store.revoke, key_id, actor)
        if record is not None:
            await self.refresh()
        return record

    async def refresh(self) -> None:
        stored = await asyncio.to_thread(self.store.all)
        keys = {digest: record.to_api_key() for digest, record in stored}
        keys.update(self._configured)  # configuration wins over a table row with the same key
        self._keys = keys  # one assignment: a request sees the old ring or the new one
        self.records = [record for _, record in stored]
