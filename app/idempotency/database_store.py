"""Seen keys in the `idempotency_keys` table: shared by every worker and instance using the database.

The reservations and settlements of a worker's concurrent requests are written together (group
commit), whatever their number of keys: the settlements' updates and deletes, then a
multi-row insert that skips keys already there (and says which it inserted), a locking read of
those only when there are any, and the group semantics worked out in memory. The statements go to
the driver's own cursor as they are (SQLite and PostgreSQL each have their own): SQLAlchemy's
connection, transaction and parameter processing cost more client CPU than the database's work,
and the answers are JSON already made by orjson.

On PostgreSQL the group commits go through a connection driven by the event loop
(`app.database.loop_connection`; the purge of expired keys, which may take long, through another):
a thread hop per group commit cost the worker as much CPU as the statement. They run in autocommit
mode, each atomic on its own: when a group with keys found taken (or repeated) fails after its
insert, the keys it inserted are deleted again. On SQLite (whose driver blocks) a group commit is
one transaction in a thread, and the same code runs there: its statements are plain calls dressed
as coroutines that never suspend. Nothing is waited on to reach the disk (PostgreSQL's
`synchronous_commit=off` on the store's connections, SQLite's `synchronous=NORMAL` through an
engine of its own): a crash of the database host may forget the last keys, which can only let a
repeat through after that fault (at least once allows it); the spool's commits stay durable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, cast

import orjson
from sqlalchemy import Engine

from app.database.engine import POSTGRES_NOT_WAITING_FOR_THE_DISK, create_database_engine
from app.database.group_commit import GroupCommit
from app.idempotency.store import KeyGroup, Known, StoredResult, assign_groups

if TYPE_CHECKING:  # psycopg is loaded with a PostgreSQL engine only, never otherwise
    import psycopg

    from app.database.loop_connection import LoopConnection

logger = logging.getLogger(__name__)

CLASSIFY_ROUNDS = 5  # insert-or-read rounds before giving up on keys released and re-taken meanwhile
ROWS_PER_STATEMENT = 2000  # SQLite allows 32,766 parameters in one statement; three a row here

Result = TypeVar("Result")


class _Statements(Protocol):
    """The few statements the store needs, in one database's dialect, on the driver's own cursor."""

    autocommit: bool  # each statement commits on its own (else: one transaction a group commit)

    def locking(self, cursor: Any) -> AbstractAsyncContextManager[Any]:
        """A transaction around reads that lock rows and the writes that depend on them."""
        ...

    async def insert_new(self, cursor: Any, rows: Sequence[tuple[str, str]], expires: datetime) -> set[str]:
        """Insert (key, answer JSON) rows whose key is absent; the keys inserted."""
        ...

    async def read_for_update(self, cursor: Any, keys: Sequence[str]) -> Iterable[tuple[str, str, datetime]]:
        """(key, answer JSON, expiry) of the keys present, locked until the transaction ends."""
        ...

    async def delete(self, cursor: Any, keys: Sequence[str]) -> None: ...

    async def update(self, cursor: Any, rows: Sequence[tuple[str, str]], expires: datetime | None) -> None:
        """Set (key, answer JSON) rows' answers, and their expiry when given."""
        ...

    async def delete_expired(self, cursor: Any, now: datetime) -> int: ...


def _chunks(items: Sequence[Any]) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), ROWS_PER_STATEMENT):
        yield items[start : start + ROWS_PER_STATEMENT]


def _sqlite_time(moment: datetime) -> str:
    """SQLAlchemy's SQLite storage format for DateTime (UTC, no offset): it sorts as time does."""
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")


class _SqliteStatements:
    """One transaction a group commit: SQLite's BEGIN and COMMIT cost no round trip, and the first
    write takes the database's write lock for the rest. Plain calls (sqlite3 blocks): each
    coroutine here finishes without suspending."""

    autocommit = False

    def locking(self, cursor: Any) -> AbstractAsyncContextManager[Any]:
        return nullcontext()  # the write lock is held already

    async def insert_new(self, cursor: Any, rows: Sequence[tuple[str, str]], expires: datetime) -> set[str]:
        inserted: set[str] = set()
        at = _sqlite_time(expires)
        for chunk in _chunks(rows):
            values = ", ".join(["(?, ?, ?)"] * len(chunk))
            parameters = tuple(item for key, result in chunk for item in (key, result, at))
            cursor.execute(
                f"INSERT INTO idempotency_keys (key, result, expires_at) VALUES {values} "
                "ON CONFLICT (key) DO NOTHING RETURNING key",
                parameters,
            )
            inserted.update(row[0] for row in cursor.fetchall())
        return inserted

    async def read_for_update(self, cursor: Any, keys: Sequence[str]) -> Iterable[tuple[str, str, datetime]]:
        # The insert before took SQLite's write lock: nobody else changes rows until we commit.
        found: list[tuple[str, str, datetime]] = []
        for chunk in _chunks(keys):
            marks = ", ".join(["?"] * len(chunk))
            cursor.execute(
                f"SELECT key, result, expires_at FROM idempotency_keys WHERE key IN ({marks})", tuple(chunk)
            )
            for key, result, expires_at in cursor.fetchall():
                found.append((key, result, datetime.fromisoformat(expires_at).replace(tzinfo=UTC)))
        return found

    async def delete(self, cursor: Any, keys: Sequence[str]) -> None:
        for chunk in _chunks(keys):
            marks = ", ".join(["?"] * len(chunk))
            cursor.execute(f"DELETE FROM idempotency_keys WHERE key IN ({marks})", tuple(chunk))

    async def update(self, cursor: Any, rows: Sequence[tuple[str, str]], expires: datetime | None) -> None:
        if expires is None:
            cursor.executemany(
                "UPDATE idempotency_keys SET result = ? WHERE key = ?",
                [(result, key) for key, result in rows],
            )
        else:
            at = _sqlite_time(expires)
            cursor.executemany(
                "UPDATE idempotency_keys SET result = ?, expires_at = ? WHERE key = ?",
                [(result, at, key) for key, result in rows],
            )

    async def delete_expired(self, cursor: Any, now: datetime) -> int:
        cursor.execute("DELETE FROM idempotency_keys WHERE expires_at <= ?", (_sqlite_time(now),))
        return int(cursor.rowcount)


class _PostgresStatements:
    """Arrays unnested server-side: one statement and one round trip however many keys.

    Statements run in autocommit mode, each atomic on its own, so the usual group commit (new keys
    only) is one round trip; a transaction would add two (BEGIN, COMMIT). Keys found taken are
    read, locked and decided in a transaction. The arrays go in psycopg's binary format (`%b`):
    its text format escapes every element with a regular expression, which took half the client's
    CPU of a reservation.
    """

    autocommit = True

    def locking(self, cursor: Any) -> AbstractAsyncContextManager[Any]:
        return cast("psycopg.AsyncCursor[Any]", cursor).connection.transaction()

    async def insert_new(self, cursor: Any, rows: Sequence[tuple[str, str]], expires: datetime) -> set[str]:
        await cursor.execute(
            "INSERT INTO idempotency_keys (key, result, expires_at) "
            "SELECT k, r::json, %s FROM unnest(%b::text[], %b::text[]) AS t(k, r) "
            "ON CONFLICT (key) DO NOTHING RETURNING key",
            (expires, [key for key, _ in rows], [result for _, result in rows]),
        )
        return {row[0] for row in await cursor.fetchall()}

    async def read_for_update(self, cursor: Any, keys: Sequence[str]) -> Iterable[tuple[str, str, datetime]]:
        await cursor.execute(
            "SELECT key, result::text, expires_at FROM idempotency_keys WHERE key = ANY(%b::text[]) FOR UPDATE",
            (list(keys),),
        )
        return [(key, result, expires_at) for key, result, expires_at in await cursor.fetchall()]

    async def delete(self, cursor: Any, keys: Sequence[str]) -> None:
        await cursor.execute("DELETE FROM idempotency_keys WHERE key = ANY(%b::text[])", (list(keys),))

    async def update(self, cursor: Any, rows: Sequence[tuple[str, str]], expires: datetime | None) -> None:
        # One primary-key UPDATE a row, pipelined by psycopg's executemany: a join with the
        # unnested arrays could be planned as a scan of the table (and kept as the prepared plan).
        if expires is None:
            await cursor.executemany(
                "UPDATE idempotency_keys SET result = %s::json WHERE key = %s",
                [(result, key) for key, result in rows],
            )
        else:
            await cursor.executemany(
                "UPDATE idempotency_keys SET result = %s::json, expires_at = %s WHERE key = %s",
                [(result, expires, key) for key, result in rows],
            )

    async def delete_expired(self, cursor: Any, now: datetime) -> int:
        await cursor.execute("DELETE FROM idempotency_keys WHERE expires_at <= %s", (now,))
        return int(cursor.rowcount)


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
        self._loop_connection: LoopConnection | None = None  # PostgreSQL's, for the group commits
        self._purge_connection: LoopConnection | None = None  # and for the purge
        dialect = engine.dialect.name
        if dialect == "sqlite":
            self._sql: _Statements = _SqliteStatements()
        elif dialect == "postgresql":
            from app.database.loop_connection import LoopConnection  # here: it loads psycopg

            self._sql = _PostgresStatements()
            # Not the engine's options: a store may be given a durable engine (SQLite's is its own).
            self._loop_connection = LoopConnection(engine, options=POSTGRES_NOT_WAITING_FOR_THE_DISK)
            self._purge_connection = LoopConnection(engine, options=POSTGRES_NOT_WAITING_FOR_THE_DISK)
        else:
            raise ValueError(f"the database idempotency store supports SQLite and PostgreSQL, not {dialect}")
        self._commits: GroupCommit[_Operation, list[Known | None]] = GroupCommit(
            self._write_batch, "idempotency-writer"
        )

    @classmethod
    def for_database(cls, url: str, window: timedelta) -> DatabaseIdempotencyStore:
        """The store on an engine of its own whose commits do not wait for the disk (SQLite's; the
        store's PostgreSQL connections set that themselves)."""
        return cls(create_database_engine(url, durable=False), window)

    async def close(self) -> None:
        await self._commits.drain()  # final answers not yet written
        for connection in (self._loop_connection, self._purge_connection):
            if connection is not None:
                await connection.close()
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

    async def _write_batch(self, operations: Sequence[_Operation]) -> list[list[Known | None]]:
        return await self._run(lambda cursor: self._write(cursor, operations), self._loop_connection)

    async def _write(self, cursor: Any, operations: Sequence[_Operation]) -> list[list[Known | None]]:
        """One group commit (on SQLite one transaction): the settlements, merged, then every
        reservation, in order."""
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
        if completed:
            rows = [(key, orjson.dumps(result).decode()) for key, result in completed.items()]
            await self._sql.update(cursor, rows, None)
        if released:
            await self._sql.delete(cursor, list(released))
        answers = await self._reserve_all(cursor, groups) if groups else []
        split: list[list[Known | None]] = []
        for operation in operations:
            if isinstance(operation, _Settle):
                split.append([])
            else:
                split.append(answers[: len(operation)])
                answers = answers[len(operation) :]
        return split

    async def _reserve_all(self, cursor: Any, groups: Sequence[KeyGroup]) -> list[Known | None]:
        now = datetime.now(UTC)
        expires = now + self._window
        first: dict[str, StoredResult] = {}  # each key with the provisional answer of its first use
        for group in groups:
            for key, provisional in group:
                first.setdefault(key, provisional)
        encoded = {key: orjson.dumps(result).decode() for key, result in first.items()}
        inserted = await self._sql.insert_new(cursor, list(encoded.items()), expires)
        try:
            if len(inserted) == len(first):  # all new: nothing to read or lock
                return await self._assign(cursor, groups, first, inserted, {}, set(), expires)
            async with self._sql.locking(cursor):
                pending = [key for key in encoded if key not in inserted]
                again, live, taken_over = await self._classify(cursor, encoded, pending, expires, now)
                ours = inserted | again | taken_over
                return await self._assign(cursor, groups, first, ours, live, taken_over, expires)
        except Exception:
            # Committed on its own, the insert outlives a failure after it (a deadlock, a lost
            # connection): its keys are given back, or a retry of these requests, told of the
            # failure, would be answered `duplicate` for events never published.
            if self._sql.autocommit and inserted:
                with contextlib.suppress(Exception):
                    await self._sql.delete(cursor, list(inserted))
            raise

    async def _assign(
        self,
        cursor: Any,
        groups: Sequence[KeyGroup],
        first: dict[str, StoredResult],
        ours: set[str],
        live: dict[str, StoredResult],
        taken_over: set[str],
        expires: datetime,
    ) -> list[Known | None]:
        """The answer per group; keys this call holds but does not need are freed, and those it
        keeps for a later use than their first (or took over) get that use's answer."""
        answers, assigned = assign_groups(groups, live)
        stale = [key for key in ours if key not in assigned]
        if stale:  # reserved by this call, then not needed: as if never reserved
            await self._sql.delete(cursor, stale)
        changed = [
            (key, orjson.dumps(result).decode())
            for key, result in assigned.items()
            if key in ours and (result is not first[key] or key in taken_over)
        ]
        if changed:  # taken over, or assigned to a later use than the first
            await self._sql.update(cursor, changed, expires)
        return answers

    async def _classify(
        self, cursor: Any, encoded: dict[str, str], pending: list[str], expires: datetime, now: datetime
    ) -> tuple[set[str], dict[str, StoredResult], set[str]]:
        """Of the `pending` keys (present when inserted): which are live elsewhere, with their
        answers, and which were expired and are now taken over (locked until the transaction
        ends); those released by another request between the insert and the read are inserted
        again, and returned first (a few rounds at most: each round needs a concurrent release)."""
        inserted: set[str] = set()
        live: dict[str, StoredResult] = {}
        taken_over: set[str] = set()
        for _ in range(CLASSIFY_ROUNDS):
            for key, result, expires_at in await self._sql.read_for_update(cursor, pending):
                if expires_at > now:
                    live[key] = orjson.loads(result)
                else:
                    taken_over.add(key)
            gone = [key for key in pending if key not in live and key not in taken_over]
            if not gone:
                return inserted, live, taken_over
            again = await self._sql.insert_new(cursor, [(key, encoded[key]) for key in gone], expires)
            inserted |= again
            pending = [key for key in gone if key not in again]
            if not pending:
                return inserted, live, taken_over
        raise RuntimeError(f"idempotency keys kept changing under this request: {pending[:3]}")

    async def purge_expired(self) -> int:
        now = datetime.now(UTC)
        return await self._run(lambda cursor: self._sql.delete_expired(cursor, now), self._purge_connection)

    async def _run(
        self, work: Callable[[Any], Coroutine[Any, Any, Result]], connection: LoopConnection | None
    ) -> Result:
        """`work` on a cursor of `connection` (PostgreSQL), else in a thread, in a transaction."""
        if connection is not None:
            async with connection.cursor() as cursor:
                return await work(cursor)
        return await asyncio.to_thread(self._run_in_transaction, work)

    def _run_in_transaction(self, work: Callable[[Any], Coroutine[Any, Any, Result]]) -> Result:
        with self._transaction() as cursor:
            return _run_to_end(work(cursor))

    @contextmanager
    def _transaction(self) -> Iterator[Any]:
        """A cursor of a pooled connection, the driver's own, committed at the end."""
        connection = self._engine.raw_connection()
        try:
            cursor = connection.cursor()
            try:
                yield cursor
            finally:
                cursor.close()
            connection.commit()
        except BaseException as error:
            with contextlib.suppress(Exception):
                connection.rollback()
            dialect = self._engine.dialect
            if isinstance(error, dialect.loaded_dbapi.Error) and dialect.is_disconnect(
                error, connection.dbapi_connection, None
            ):
                connection.invalidate(error)  # not back to the pool: the next write connects anew
            raise
        finally:
            connection.close()  # back to the pool, unless invalidated


def _run_to_end(work: Coroutine[Any, Any, Result]) -> Result:
    """Run a coroutine that never suspends (SQLite's statements: plain calls), without a loop."""
    try:
        work.send(None)
    except StopIteration as finished:
        return cast(Result, finished.value)
    work.close()
    raise RuntimeError("a statement of a blocking driver suspended")


def _log_failure(written: asyncio.Future[list[Known | None]]) -> None:
    """A settlement nobody waits for: its failure is logged (its keys keep their provisional
    answer, so a repeat is still answered duplicate, until the window ends)."""
    if not written.cancelled() and written.exception() is not None:
        logger.warning("idempotency answers not stored", extra={"error": str(written.exception())})
