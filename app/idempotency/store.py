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

from sqlalchemy import Connection, Engine, bindparam, delete, select, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from app.database.schema import IdempotencyKey

StoredResult = dict[str, Any]
CLASSIFY_ROUNDS = 5  # insert-or-read rounds before giving up on keys released and re-taken meanwhile


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


def _assign(
    groups: Sequence[KeyGroup], live: Mapping[str, StoredResult]
) -> tuple[list[Known | None], dict[str, StoredResult]]:
    """`IdempotencyStore.reserve`'s group semantics, given the keys already `live` elsewhere:
    the answer per group, and each key this call keeps with the provisional answer it keeps."""
    assigned: dict[str, StoredResult] = {}

    def take(key: str, provisional: StoredResult) -> StoredResult | None:
        known = live.get(key, assigned.get(key))
        if known is None:
            assigned[key] = provisional
        return known

    def give_back(key: str) -> None:
        assigned.pop(key, None)

    return reserve_groups(groups, take, give_back), assigned


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
    """The `idempotency_keys` table, shared by every worker and instance using the same database.

    A request's keys cost one transaction to reserve and one to settle, whatever their number:
    a multi-row insert that skips keys already there (and says which it inserted), one locking read
    of those, and the group semantics worked out in memory. One transaction per key made a batch
    of 100 attempts cost ~200 commits.
    """

    def __init__(self, engine: Engine, window: timedelta) -> None:
        self._engine = engine
        self._window = window
        dialect = engine.dialect.name
        if dialect not in ("sqlite", "postgresql"):
            raise ValueError(f"the database idempotency store supports SQLite and PostgreSQL, not {dialect}")
        self._insert = sqlite_insert if dialect == "sqlite" else postgresql_insert

    async def reserve(self, groups: Sequence[KeyGroup]) -> list[Known | None]:
        if not any(groups):
            return [None for _ in groups]
        return await asyncio.to_thread(self._reserve_all, groups)

    def _reserve_all(self, groups: Sequence[KeyGroup]) -> list[Known | None]:
        now = datetime.now(UTC)
        expires = now + self._window
        first: dict[str, StoredResult] = {}  # each key with the provisional answer of its first use
        for group in groups:
            for key, provisional in group:
                first.setdefault(key, provisional)
        with self._engine.begin() as connection:
            ours, live, taken_over = self._classify(connection, first, expires, now)
            answers, assigned = _assign(groups, live)
            stale = [key for key in ours if key not in assigned]
            if stale:  # reserved by this call, then not needed: as if never reserved
                connection.execute(delete(IdempotencyKey).where(IdempotencyKey.key.in_(stale)))
            changed = [
                {"k": key, "r": result, "e": expires}
                for key, result in assigned.items()
                if key in ours and (result is not first[key] or key in taken_over)
            ]
            if changed:  # taken over, or assigned to a later use than the first
                connection.execute(
                    update(IdempotencyKey)
                    .where(IdempotencyKey.key == bindparam("k"))
                    .values(result=bindparam("r"), expires_at=bindparam("e")),
                    changed,
                )
        return answers

    def _classify(
        self, connection: Connection, first: dict[str, StoredResult], expires: datetime, now: datetime
    ) -> tuple[set[str], dict[str, StoredResult], set[str]]:
        """Which keys this call now holds (inserted, or expired and taken over) and which are live
        elsewhere, with their answers. A key released by another request between our insert and
        our read is tried again (a few rounds at most: each round needs a concurrent release)."""
        ours: set[str] = set()
        live: dict[str, StoredResult] = {}
        taken_over: set[str] = set()
        pending = list(first)
        insert_new = self._insert(IdempotencyKey).on_conflict_do_nothing(index_elements=["key"])
        for _ in range(CLASSIFY_ROUNDS):
            rows = [{"key": key, "result": first[key], "expires_at": expires} for key in pending]
            inserted = set(connection.scalars(insert_new.returning(IdempotencyKey.key), rows))
            ours |= inserted
            others = [key for key in pending if key not in inserted]
            if not others:
                return ours, live, taken_over
            found = connection.execute(
                select(IdempotencyKey.key, IdempotencyKey.result, IdempotencyKey.expires_at)
                .where(IdempotencyKey.key.in_(others))
                .with_for_update()
            )
            for key, result, expires_at in found:
                if (expires_at if expires_at.tzinfo else expires_at.replace(tzinfo=UTC)) > now:
                    live[key] = dict(result)
                else:
                    ours.add(key)
                    taken_over.add(key)
            pending = [key for key in others if key not in live and key not in ours]
            if not pending:
                return ours, live, taken_over
        raise RuntimeError(f"idempotency keys kept changing under this request: {pending[:3]}")

    async def settle(self, completed: Mapping[str, StoredResult], released: Sequence[str]) -> None:
        if completed or released:
            await asyncio.to_thread(self._settle, dict(completed), list(released))

    def _settle(self, completed: dict[str, StoredResult], released: list[str]) -> None:
        with self._engine.begin() as connection:
            if completed:
                connection.execute(
                    update(IdempotencyKey)
                    .where(IdempotencyKey.key == bindparam("k"))
                    .values(result=bindparam("r")),
                    [{"k": key, "r": result} for key, result in completed.items()],
                )
            if released:
                connection.execute(delete(IdempotencyKey).where(IdempotencyKey.key.in_(released)))

    def purge_expired(self) -> int:
        with Session(self._engine) as session, session.begin():
            now = datetime.now(UTC)
            expired = list(
                session.scalars(select(IdempotencyKey.key).where(IdempotencyKey.expires_at <= now))
            )
            session.execute(delete(IdempotencyKey).where(IdempotencyKey.key.in_(expired)))
            return len(expired)
