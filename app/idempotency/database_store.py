"""Seen keys in the `idempotency_keys` table: shared by every worker and instance using the database.

A request's keys cost one transaction to reserve and one to settle, whatever their number: a
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
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

import orjson
from sqlalchemy import Connection, Engine

from app.database.engine import create_database_engine
from app.idempotency.store import KeyGroup, Known, StoredResult, assign_groups

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
    """Arrays unnested server-side: one statement and one round trip however many keys."""

    def insert_new(
        self, connection: Connection, rows: Sequence[tuple[str, str]], expires: datetime
    ) -> set[str]:
        found = connection.exec_driver_sql(
            "INSERT INTO idempotency_keys (key, result, expires_at) "
            "SELECT k, r::json, %s FROM unnest(%s::text[], %s::text[]) AS t(k, r) "
            "ON CONFLICT (key) DO NOTHING RETURNING key",
            (expires, [key for key, _ in rows], [result for _, result in rows]),
        )
        return {row[0] for row in found}

    def read_for_update(
        self, connection: Connection, keys: Sequence[str]
    ) -> Iterable[tuple[str, str, datetime]]:
        found = connection.exec_driver_sql(
            "SELECT key, result::text, expires_at FROM idempotency_keys WHERE key = ANY(%s) FOR UPDATE",
            (list(keys),),
        )
        return [(key, result, expires_at) for key, result, expires_at in found]

    def delete(self, connection: Connection, keys: Sequence[str]) -> None:
        connection.exec_driver_sql("DELETE FROM idempotency_keys WHERE key = ANY(%s)", (list(keys),))

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


class DatabaseIdempotencyStore:
    """`IdempotencyStore` on the `idempotency_keys` table (SQLite or PostgreSQL)."""

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

    @classmethod
    def for_database(cls, url: str, window: timedelta) -> DatabaseIdempotencyStore:
        """The store on an engine of its own whose commits do not wait for the disk."""
        return cls(create_database_engine(url, durable=False), window)

    def close(self) -> None:
        self._engine.dispose()

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

    async def settle(self, completed: Mapping[str, StoredResult], released: Sequence[str]) -> None:
        if completed or released:
            await asyncio.to_thread(self._settle, dict(completed), list(released))

    def _settle(self, completed: dict[str, StoredResult], released: list[str]) -> None:
        with self._engine.begin() as connection:
            if completed:
                rows = [(key, orjson.dumps(result).decode()) for key, result in completed.items()]
                self._sql.update(connection, rows, None)
            if released:
                self._sql.delete(connection, released)

    async def purge_expired(self) -> int:
        return await asyncio.to_thread(self._purge_expired)

    def _purge_expired(self) -> int:
        with self._engine.begin() as connection:
            return self._sql.delete_expired(connection, datetime.now(UTC))
