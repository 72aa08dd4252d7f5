"""Where seen keys live for IDEMPOTENCY_WINDOW: in memory (one process) or in the database (shared).

A key is reserved before its event is published, so two concurrent copies cannot both publish;
it is completed with the answer given, or released when the event was not accepted (so a retry
after a 429/503 is processed, not answered as a duplicate).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import Engine, delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.database.schema import IdempotencyKey

StoredResult = dict[str, Any]


class IdempotencyStore(Protocol):
    """Reserve, complete or release keys; `reserve` returns the first answer for a known key."""

    async def reserve(self, key: str, provisional: StoredResult) -> StoredResult | None: ...

    async def complete(self, key: str, result: StoredResult) -> None: ...

    async def release(self, key: str) -> None: ...


class MemoryIdempotencyStore:
    """Bounded LRU of keys with expiry; per process (each worker has its own)."""

    def __init__(self, window: timedelta, max_keys: int) -> None:
        self._window = window.total_seconds()
        self._max_keys = max_keys
        self._entries: OrderedDict[str, tuple[float, StoredResult]] = OrderedDict()

    async def reserve(self, key: str, provisional: StoredResult) -> StoredResult | None:
        now = time.monotonic()
        found = self._entries.get(key)
        if found is not None and found[0] > now:
            return found[1]
        self._entries[key] = (now + self._window, provisional)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max_keys:
            self._entries.popitem(last=False)
        return None

    async def complete(self, key: str, result: StoredResult) -> None:
        self._entries[key] = (time.monotonic() + self._window, result)

    async def release(self, key: str) -> None:
        self._entries.pop(key, None)


class DatabaseIdempotencyStore:
    """The `idempotency_keys` table, shared by every worker and instance using the same database."""

    def __init__(self, engine: Engine, window: timedelta) -> None:
        self._engine = engine
        self._window = window

    async def reserve(self, key: str, provisional: StoredResult) -> StoredResult | None:
        return await asyncio.to_thread(self._reserve, key, provisional)

    def _reserve(self, key: str, provisional: StoredResult) -> StoredResult | None:
        now = datetime.now(UTC)
        with Session(self._engine) as session:
            try:
                with session.begin():
                    session.add(IdempotencyKey(key=key, result=provisional, expires_at=now + self._window))
                return None
            except IntegrityError:
                pass
            with session.begin():
                row = session.get(IdempotencyKey, key, with_for_update=True)
                if row is None:  # released meanwhile: take it
                    session.add(IdempotencyKey(key=key, result=provisional, expires_at=now + self._window))
                    return None
                expires = row.expires_at if row.expires_at.tzinfo else row.expires_at.replace(tzinfo=UTC)
                if expires <= now:
                    row.result, row.expires_at = provisional, now + self._window
                    return None
                return dict(row.result)

    async def complete(self, key: str, result: StoredResult) -> None:
        await asyncio.to_thread(self._complete, key, result)

    def _complete(self, key: str, result: StoredResult) -> None:
        with Session(self._engine) as session, session.begin():
            row = session.get(IdempotencyKey, key)
            if row is not None:
                row.result = result

    async def release(self, key: str) -> None:
        await asyncio.to_thread(self._release, key)

    def _release(self, key: str) -> None:
        with Session(self._engine) as session, session.begin():
            session.execute(delete(IdempotencyKey).where(IdempotencyKey.key == key))

    def purge_expired(self) -> int:
        with Session(self._engine) as session, session.begin():
            now = datetime.now(UTC)
            expired = list(
                session.scalars(select(IdempotencyKey.key).where(IdempotencyKey.expires_at <= now))
            )
            session.execute(delete(IdempotencyKey).where(IdempotencyKey.key.in_(expired)))
            return len(expired)
