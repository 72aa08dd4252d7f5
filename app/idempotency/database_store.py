"""Seen keys in the `idempotency_keys` table: shared by every worker and instance using the database.

The reservations and settlements of a worker's concurrent requests share transactions (group
commit), whatever their number of keys: the settlements' updates and deletes, then a
multi-row insert that skips keys already there (and says which it inserted), one locking read of
those, and the group semantics worked out in memory. The statements go to the driver as they are
(SQLite and PostgreSQL each have their own): SQLAlchemy's per-row parameter and JSON processing
cost more than the database's work, and the answers are JSON already made by orjson.

These commits are not waited on to reach the disk (`synchronous_commit=off`, SQLite's
`synchronous=NORMAL`, through an engine of their own): a crash of the database host may forget
the last keys, which can only let a repeat through after that fault (at least once allows it);
the spool's commits stay durable.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import orjson
from sqlalchemy import Connection, Engine

from app.database.engine import create_database_engine
from app.database.group_commit import GroupCommit
from app.idempotency.store import KeyGroup, Known, StoredResult, assign_groups

logger = logging.getLogger(__name__)

CLASSIFY_ROUNDS = 5  # insert-or-read rounds before giving up on keys released and re-taken meanwhile
ROWS_PER_STATEMENT = 2000  # SQLite allows 32,766 parameters in one statement; three a row here


class _Statements(Protocol):
    """The few statements the store needs, in one database's dialect."""

    def insert_new(
        self, connection: Connection, rows: Sequence[tuple[str, str]], expires: datetime
    ) -> set[str]:
        """Insert (key, answer JSON) rows whose key is absent; the keys inserted."""
        ...

    def read_for_update(
        self, connection: Connection, keys: Sequence[str]
    ) -> Iterable[tuple[str, str, datetime]]:
        """(key, answer JSON, expiry) of the keys present, locked until the transaction ends."""
        ...

    def delete(self, connection: Connection, keys: Sequence[str]) -> None: ...

    def update(
        self, connection: Connection, rows: Sequence[tuple[str, str]], expires: datetime | None
    ) -> None:
        """Set (key, answer JSON) rows' answers, and their expiry when given."""
        ...

    def delete_expired(self, connection: Connection, now: datetime) -> int: ...


def _chunks(items: Sequence[Any]) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), ROWS_PER_STATEMENT):
        yield items[start : start + ROWS_PER_STATEMENT]


def _sqlite_time(moment: datetime) -> str:
    """SQLAlchemy's SQLite storage format for DateTime (UTC, no offset): it sorts as time does."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


class _SqliteStatements:
    def insert_new(
        self, connection: Connection, rows: Sequence[tuple[str, str]], expires: datetime
    ) -> set[str]:
        inserted: set[str] = set()
        at = _sqlite_time(expires)
        for chunk in _chunks(rows):
            values = ", ".join(["(?, ?, ?)"] * len(chunk))
            parameters = tuple(item for key, result in chunk for item in (key, result, at))
            found = connection.exec_driver_sql(
                f"INSERT INTO idempotency_keys (key, result, expires_at) VALUES {values} "
                "ON CONFLICT (key) DO NOTHING RETURNING key",
                parameters,
            )
            inserted.update(row[0] for row in found)
        return inserted

    def read_for_update(
        self, connection: Connection, keys: Sequence[str]
    ) -> Iterable[tuple[str, str, datetime]]:
        # The insert above took SQLite's write lock: nobody else changes rows until we commit.
        for chunk in _chunks(keys):
            marks = ", ".join(["?"] * len(chunk))
            found = connection.exec_driver_sql(
                f"SELECT key, result, expires_at FROM idempotency_keys WHERE key IN ({marks})", tuple(chunk)
            )
            for key, result, expires_at in found:
                yield key, result, datetime.fromisoformat(expires_at).replace(tzinfo=UTC)

    def delete(self, connection: Connection, keys: Sequence[str]) -> None:
        for chunk in _chunks(keys):
            marks = ", ".join(["?"] * len(chunk))
            connection.exec_driver_sql(f"DELETE FROM idempotency_keys WHERE key IN ({marks})", tuple(chunk))

    def update(
        self, connection: Connection, rows: Sequence[tuple[str, str]], expires: datetime | None
    ) -> None:
        if expires is None:
            connection.exec_driver_sql(
                "UPDATE idempotency_keys SET result = ? WHERE key = ?",
                [(result, key) for key, result in rows],
            )
        else:
            at = _sqlite_time(expires)
            connection.exec_driver_sql(
                "UPDATE idempotency_keys SET result = ?, expires_at = ? WHERE key = ?",
                [(result, at, key) for key, result in rows],
            )

    def delete_expired(self, connection: Connection, now: datetime) -> int:
        deleted = connection.exec_driver_sql(
            "DELETE FROM idempotency_keys WHERE expires_at <= ?", (_sqlite_time(now),)
        )
        return int(deleted.rowcount)


class _PostgresStatements:
    """Arrays unnested server-side: one statement and one round trip however many keys.

    The arrays go in psycopg's binary format (`%b`): its text format escapes every element with a
    regular expression, which took half the client's CPU of a reservation.
    """

    def insert_new(
        self, connection: Connection, rows: Sequence[tuple[str, str]], expires: datetime
    ) -> set[str]:
        found = connection.exec_driver_sql(
            "INSERT INTO idempotency_keys (key, result, expires_at) "
            "SELECT k, r::json, %s FROM unnest(%b::text[], %b::text[]) AS t(k, r) "
            "ON CONFLICT (key) DO NOTHING RETURNING key",
            (expires, [key for key, _ in rows], [result for _, result in rows]),
        )
        return {row[0] for row in found}

    def read_for_update(
        self, connection: Connection, keys: Sequence[str]
    ) -> Iterable[tuple[str, str, datetime]]:
        found = connection.exec_driver_sql(
            "SELECT key, result::text, expires_at FROM idempotency_keys WHERE key = ANY(%b::text[]) FOR UPDATE",
            (list(keys),),
        )
        return [(key, result, expires_at) for key, result, expires_at in found]

    def delete(self, connection: Connection, keys: Sequence[str]) -> None:
        connection.exec_driver_sql("DELETE FROM idempotency_keys WHERE key = ANY(%b::text[])", (list(keys),))

    def update(
        self, connection: Connection, rows: Sequence[tuple[str, str]], expires: datetime | None
    ) -> None:
        # One primary-key UPDATE a row, pipelined by psycopg's executemany: a join with the
        # unnested arrays could be planned as a scan of the table (and kept as the prepared plan).
        if expires is None:
            connection.exec_driver_sql(
                "UPDATE idempotency_keys SET result = %s::json WHERE key = %s",
                [(result, key) for key, result in rows],
            )
        else:
            connection.exec_driver_sql(
                "UPDATE idempotency_keys SET result = %s::json, expires_at = %s WHERE key = %s",
                [(result, expires, key) for key, result in rows],
            )

    def delete_expired(self, connection: Connection, now: datetime) -> int:
        deleted = connection.exec_driver_sql("DELETE FROM idempotency_keys WHERE expires_at <= %s", (now,))
        return int(deleted.rowcount)


@dataclass(frozen=True, slots=True)
class _Settle:
    completed: Mapping[str, StoredResult]
    released: Sequence[str]


_Operation = Sequence[KeyGroup] | _Settle  # a request's reservation, or its settlement


class DatabaseIdempotencyStore:
    """`IdempotencyStore` on the `idempotency_keys` table (SQLite or PostgreSQL).

    A worker's reservations and settlements go through one queue with group commit: those
    arriving while a transaction is written go together in the next one (settlements first), so
    concurrent requests share transactions instead of queueing for the database one by one.
    A settlement that only stores final answers is not waited for (the request's answer does not
    depend on it; later requests of this worker are queued behind it); one that releases keys is,
    so a retry after a refusal, on any worker, finds the key free.
    """

    def __init__(self, engine: Engine, window: timedelta) -> None:
        self._engine = engine
        self._window = window
        dialect = engine.dialect.name
        if dialect == "sqlite":
            self._sql: _Statements = _SqliteStatements()
        elif dialect == "postgresql":
            self._sql = _PostgresStatements()
        else:
            raise ValueError(f"the database idempotency store supports SQLite and PostgreSQL, not {dialect}")
        self._commits: GroupCommit[_Operation, list[Known | None]] = GroupCommit(
            self._write, "idempotency-writer"
        )

    @classmethod
    def for_database(cls, url: str, window: timedelta) -> DatabaseIdempotencyStore:
        """The store on an engine of its own whose commits do not wait for the disk."""
        return cls(create_database_engine(url, durable=False), window)

    async def close(self) -> None:
        await self._commits.drain()  # final answers not yet written
        self._engine.dispose()

    async def reserve(self, groups: Sequence[KeyGroup]) -> list[Known | None]:
        if not any(groups):
            return [None for _ in groups]
        return await self._commits.submit(groups)

    async def settle(self, completed: Mapping[str, StoredResult], released: Sequence[str]) -> None:
        if not completed and not released:
            return
        written = self._commits.submit(_Settle(dict(completed), list(released)))
        if released:
            await written
        else:
            written.add_done_callback(_log_failure)

    def _write(self, operations: Sequence[_Operation]) -> list[list[Known | None]]:
        """One transaction: the settlements, merged, then every reservation, in order."""
        completed: dict[str, StoredResult] = {}
        released: set[str] = set()
        groups: list[KeyGroup] = []
        for operation in operations:
            if isinstance(operation, _Settle):
                for key, result in operation.completed.items():
                    completed[key] = result
                    released.discard(key)
                for key in operation.released:
                    released.add(key)
                    completed.pop(key, None)
            else:
                groups.extend(operation)
        with self._engine.begin() as connection:
            if completed:
                rows = [(key, orjson.dumps(result).decode()) for key, result in completed.items()]
                self._sql.update(connection, rows, None)
            if released:
                self._sql.delete(connection, list(released))
            answers = self._reserve_all(connection, groups) if groups else []
        split: list[list[Known | None]] = []
        for operation in operations:
            if isinstance(operation, _Settle):
                split.append([])
            else:
                split.append(answers[: len(operation)])
                answers = answers[len(operation) :]
        return split

    def _reserve_all(self, connection: Connection, groups: Sequence[KeyGroup]) -> list[Known | None]:
        now = datetime.now(UTC)
        expires = now + self._window
        first: dict[str, StoredResult] = {}  # each key with the provisional answer of its first use
        for group in groups:
            for key, provisional in group:
                first.setdefault(key, provisional)
        ours, live, taken_over = self._classify(connection, first, expires, now)
        answers, assigned = assign_groups(groups, live)
        stale = [key for key in ours if key not in assigned]
        if stale:  # reserved by this call, then not needed: as if never reserved
            self._sql.delete(connection, stale)
        changed = [
            (key, orjson.dumps(result).decode())
            for key, result in assigned.items()
            if key in ours and (result is not first[key] or key in taken_over)
        ]
        if changed:  # taken over, or assigned to a later use than the first
            self._sql.update(connection, changed, expires)
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
        encoded = {key: orjson.dumps(result).decode() for key, result in first.items()}
        pending = list(first)
        for _ in range(CLASSIFY_ROUNDS):
            inserted = self._sql.insert_new(connection, [(key, encoded[key]) for key in pending], expires)
            ours |= inserted
            others = [key for key in pending if key not in inserted]
            if not others:
                return ours, live, taken_over
            for key, result, expires_at in self._sql.read_for_update(connection, others):
                if expires_at > now:
                    live[key] = orjson.loads(result)
                else:
                    ours.add(key)
                    taken_over.add(key)
            pending = [key for key in others if key not in live and key not in ours]
            if not pending:
                return ours, live, taken_over
        raise RuntimeError(f"idempotency keys kept changing under this request: {pending[:3]}")

    async def purge_expired(self) -> int:
        return await asyncio.to_thread(self._purge_expired)

    def _purge_expired(self) -> int:
        with self._engine.begin() as connection:
            return self._sql.delete_expired(connection, datetime.now(UTC))


def _log_failure(written: asyncio.Future[list[Known | None]]) -> None:
    """A settlement nobody waits for: its failure is logged (its keys keep their provisional
    answer, so a repeat is still answered duplicate, until the window ends)."""
    if not written.cancelled() and written.exception() is not None:
        logger.warning("idempotency answers not stored", extra={"error": str(written.exception())})
