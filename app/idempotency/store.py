"""Where seen keys live for IDEMPOTENCY_WINDOW: in memory (one process) or in the database (shared).

A key is reserved before its event is published, so two concurrent copies cannot both publish;
it is completed with the answer given, or released when the event was not accepted (so a retry
after a 429/503 is processed, not answered as a duplicate).
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from sqlalchemy import Engine, delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.database.schema import IdempotencyKey

StoredResult = dict[str, Any]


KeyGroup = Sequence[tuple[str, StoredResult]]  # one event's keys, each with its provisional answer
Known = tuple[int, StoredResult]  # the position of a known key in its group, and its first answer


class IdempotencyStore(Protocol):
    """Reserve keys, then complete or release them; a whole request's keys in one call each.

    `reserve` takes one group of (key, provisional answer) pairs per event, in order, and
    returns for each group None when all its keys are now reserved, or the first known key's
    position and first answer, the group's other keys then left as they were (a key repeated
    within the call is known at its second use). `settle` stores final answers, frees the rest.
    """

    async def reserve(self, groups: Sequence[KeyGroup]) -> list[Known | None]: ...

    async def settle(self, completed: Mapping[str, StoredResult], released: Sequence[str]) -> None: ...


def reserve_groups(
    groups: Sequence[KeyGroup],
    reserve: Callable[[str, StoredResult], StoredResult | None],
    release: Callable[[str], None],
) -> list[Known | None]:
    """The group semantics of `IdempotencyStore.reserve` over one-key reserve and release."""
    answers: list[Known | None] = []
    for group in groups:
        taken: list[str] = []
        answer: Known | None = None
        for position, (key, provisional) in enumerate(group):
            known = reserve(key, provisional)
            if known is not None:
                for key_taken in taken:  # this event is not published: undo its reservations
                    release(key_taken)
                answer = (position, known)
                break
            taken.append(key)
        answers.append(answer)
    return answers


class MemoryIdempotencyStore:
    """Bounded LRU of keys with expiry; per process (each worker has its own)."""

    def __init__(self, window: timedelta, max_keys: int) -> None:
        self._window = window.total_seconds()
        self._max_keys = max_keys
        self._entries: OrderedDict[str, tuple[float, StoredResult]] = OrderedDict()

    async def reserve(self, groups: Sequence[KeyGroup]) -> list[Known | None]:
        answers = reserve_groups(groups, self._reserve, self._release)
        while len(self._entries) > self._max_keys:
            self._entries.popitem(last=False)
        return answers

    def _reserve(self, key: str, provisional: StoredResult) -> StoredResult | None:
        now = time.monotonic()
        found = self._entries.get(key)
        if found is not None and found[0] > now:
            return found[1]
        self._entries[key] = (now + self._window, provisional)
        self._entries.move_to_end(key)
        return None

    def _release(self, key: str) -> None:
        self._entries.pop(key, None)

    async def settle(self, completed: Mapping[str, StoredResult], released: Sequence[str]) -> None:
        expires = time.monotonic() + self._window
        for key, result in completed.items():
            self._entries[key] = (expires, result)
        for key in released:
            self._release(key)


class DatabaseIdempotencyStore:
    """The `idempotency_keys` table, shared by every worker and instance using the same database."""

    def __init__(self, engine: Engine, window: timedelta) -> None:
        self._engine = engine
        self._window = window

    async def reserve(self, groups: Sequence[KeyGroup]) -> list[Known | None]:
        # One worker-thread hop per request; one short transaction per key.
        return await asyncio.to_thread(reserve_groups, groups, self._reserve, self._release)

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

    async def settle(self, completed: Mapping[str, StoredResult], released: Sequence[str]) -> None:
        if completed or released:
            await asyncio.to_thread(self._settle, dict(completed), list(released))

    def _settle(self, completed: dict[str, StoredResult], released: list[str]) -> None:
        with Session(self._engine) as session, session.begin():
            for key, result in completed.items():
                session.execute(update(IdempotencyKey).where(IdempotencyKey.key == key).values(result=result))
            if released:
                session.execute(delete(IdempotencyKey).where(IdempotencyKey.key.in_(released)))

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
