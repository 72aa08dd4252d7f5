"""The stores every worker shares (the database store on SQLite and PostgreSQL, the host store's
LMDB file): the group semantics of `reserve`, settling, expiry, and one round trip per request
however many keys it carries."""

from __future__ import annotations

import asyncio
import multiprocessing
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import Engine, event

from app.database import engine as engine_module
from app.database import migrations
from app.database.engine import create_database_engine
from app.idempotency.database_store import DatabaseIdempotencyStore
from app.idempotency.host_store import HostIdempotencyStore
from app.idempotency.memory_store import MemoryIdempotencyStore
from app.idempotency.store import IdempotencyStore, KeyGroup
from tests.services.postgres import PostgresServer

pytestmark = pytest.mark.integration

StoreFactory = Callable[..., IdempotencyStore]
DatabaseStoreFactory = Callable[..., DatabaseIdempotencyStore]
DATABASE_URL_FIXTURES = {"sqlite": "sqlite_url", "postgresql": "postgres_url"}


@asynccontextmanager
async def _database_stores(url: str) -> AsyncIterator[DatabaseStoreFactory]:
    """Database stores with a given window on one engine of `url`, all closed at the end (on
    PostgreSQL each has a connection of its own)."""
    engine = create_database_engine(url)
    stores: list[DatabaseIdempotencyStore] = []

    def database_store(window: timedelta = timedelta(hours=1)) -> DatabaseIdempotencyStore:
        stores.append(DatabaseIdempotencyStore(engine, window))
        return stores[-1]

    try:
        yield database_store
    finally:
        for store in stores:
            await store.close()
        engine.dispose()


@pytest.fixture
async def database_store(database_url: str) -> AsyncIterator[DatabaseStoreFactory]:
    async with _database_stores(database_url) as factory:
        yield factory


@pytest.fixture(params=["sqlite", "postgresql", "host"])
async def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoreFactory]:
    """A store of each shared kind, with the given window: the database store on both databases,
    the host store."""
    if request.param == "host":
        yield lambda window=timedelta(hours=1): HostIdempotencyStore(tmp_path / "keys", window, 1000)
        return
    async with _database_stores(request.getfixturevalue(DATABASE_URL_FIXTURES[request.param])) as factory:
        yield factory


def _group(*keys: str, answer: str = "first") -> KeyGroup:
    return [(key, {"event_id": f"{answer}-{key}"}) for key in keys]


async def test_groups_reserve_in_order_and_a_repeat_within_the_call_is_known(
    make_store: StoreFactory,
) -> None:
    store = make_store()
    answers = await store.reserve([_group("a"), _group("b"), _group("a", answer="second")])
    assert answers == [None, None, (0, {"event_id": "first-a"})]
    again = await store.reserve([_group("b", answer="later"), _group("c")])
    assert again == [(0, {"event_id": "first-b"}), None]


async def test_keys_and_answers_of_any_characters_are_kept_as_they_are(make_store: StoreFactory) -> None:
    """What an array's text form would have to escape (quotes, backslashes, commas, braces, the
    word NULL, spaces, other scripts) reaches the store and comes back unchanged."""
    odd = ['key:"quoted"', "back\\slash", "a,b", "{braces}", "NULL", " padded ", "ключ:試し", "x\ty"]
    store = make_store()
    assert await store.reserve([_group(key) for key in odd]) == [None] * len(odd)
    await store.settle({odd[0]: {"event_id": 'final "answer" \\ {x}'}}, [odd[1]])
    answers = await store.reserve([_group(key, answer="again") for key in odd])
    assert (
        answers
        == [
            (0, {"event_id": 'final "answer" \\ {x}'}),
            None,  # released
            *((0, {"event_id": f"first-{key}"}) for key in odd[2:]),
        ]
    )
    await store.close()


async def test_answers_of_every_shape_come_back_as_they_were_stored(make_store: StoreFactory) -> None:
    await _answers_of_every_shape_come_back(make_store())


async def test_the_memory_store_gives_back_answers_of_every_shape() -> None:
    await _answers_of_every_shape_come_back(MemoryIdempotencyStore(timedelta(hours=1), 1000))


async def _answers_of_every_shape_come_back(store: IdempotencyStore) -> None:
    """The common shape (a UUID event id, a status, topics), which the memory store packs, and its
    near misses, which it keeps as JSON."""
    event_id = "0b9a1c1e-3f5d-4c2a-9e47-5d6f7a8b9c0d"
    answers: list[dict[str, Any]] = [
        {"event_id": event_id, "status": "in_progress", "topics": ["learning.attempts"]},
        {"event_id": event_id, "status": "accepted", "topics": ["learning.attempts", "ml.training"]},
        {"event_id": event_id, "status": "unrouted", "topics": []},
        {"event_id": event_id.upper(), "status": "accepted", "topics": ["learning.attempts"]},
        {"event_id": event_id, "status": "some-later-status", "topics": ["learning.attempts"]},
        {"event_id": event_id, "status": "accepted", "topics": [""]},
        {"event_id": event_id, "status": "accepted", "topics": ["a\x00b"]},
        {"event_id": event_id, "status": "accepted", "topics": [1, "learning.attempts"]},
        {"event_id": event_id, "status": "accepted", "topics": ["learning.attempts"], "extra": 1},
        {"event_id": None, "status": "rejected", "topics": []},
    ]
    keys = [f"shape-{n}" for n in range(len(answers))]
    groups: list[KeyGroup] = [[(key, answer)] for key, answer in zip(keys, answers, strict=True)]
    assert await store.reserve(groups) == [None] * len(answers)
    again: list[KeyGroup] = [[(key, {"event_id": "again"})] for key in keys]
    assert await store.reserve(again) == [(0, answer) for answer in answers]
    await store.close()


async def test_a_known_key_frees_the_rest_of_its_group(make_store: StoreFactory) -> None:
    store = make_store()
    assert await store.reserve([_group("live")]) == [None]
    answers = await store.reserve([_group("x", "live", "y", answer="mine")])
    assert answers == [(1, {"event_id": "first-live"})]
    # x and y were not kept: another request takes them.
    assert await store.reserve([_group("x", "y", answer="other")]) == [None]


async def test_settle_completes_and_releases(make_store: StoreFactory) -> None:
    store = make_store()
    await store.reserve([_group("done"), _group("failed")])
    await store.settle({"done": {"event_id": "final"}}, ["failed"])
    answers = await store.reserve([_group("done", answer="retry"), _group("failed", answer="retry")])
    assert answers == [(0, {"event_id": "final"}), None]


async def test_a_later_request_sees_final_answers_not_yet_waited_for(make_store: StoreFactory) -> None:
    """The database store writes final answers behind the request (nothing releases here, so
    settle does not wait); a later request of the same worker still finds them."""
    store = make_store()
    await store.reserve([_group("k")])
    await store.settle({"k": {"event_id": "final"}}, [])
    assert await store.reserve([_group("k", answer="repeat")]) == [(0, {"event_id": "final"})]
    await store.close()


async def test_an_expired_key_is_taken_over(make_store: StoreFactory) -> None:
    store = make_store(window=timedelta(seconds=-1))  # everything reserved is expired at once
    assert await store.reserve([_group("old")]) == [None]
    assert await store.reserve([_group("old", answer="new")]) == [None]


@asynccontextmanager
async def _sent(store: DatabaseIdempotencyStore) -> AsyncIterator[list[str]]:
    """What the store sends meanwhile, one entry a round trip: on PostgreSQL from libpq's trace of
    the store's connection (a simple query's first word, or `statement` for an extended-protocol
    one), on SQLite its statements from the trace callback of each connection the pool hands out."""
    sent: list[str] = []
    connection = store._loop_connection
    if connection is None:
        with _sqlite_statements(store._engine, sent):
            yield sent
        return
    if connection._connection is None:  # opened now, so that it can be traced
        async with connection.cursor():
            pass
    assert connection._connection is not None
    pgconn = connection._connection.pgconn  # not through cursor(), which may check the connection
    with tempfile.TemporaryFile("w+") as log:
        pgconn.trace(log.fileno())
        pgconn.set_trace_flags(psycopg.pq.Trace.SUPPRESS_TIMESTAMPS)
        try:
            yield sent
        finally:
            pgconn.untrace()
        log.seek(0)
        for line in log.read().splitlines():
            direction, _, kind, *rest = line.split("\t")
            if direction == "F" and kind == "Query" and rest[0].strip() != '";"':
                sent.append(rest[0].strip().strip('"').split()[0])
            elif direction == "F" and kind == "Sync":
                sent.append("statement")


@contextmanager
def _sqlite_statements(engine: Engine, sent: list[str]) -> Iterator[None]:
    def checkout(dbapi_connection: Any, *_: Any) -> None:
        dbapi_connection.set_trace_callback(lambda statement: sent.append(statement.split()[0]))

    def checkin(dbapi_connection: Any, *_: Any) -> None:
        dbapi_connection.set_trace_callback(None)

    event.listen(engine, "checkout", checkout)
    event.listen(engine, "checkin", checkin)
    try:
        yield
    finally:
        event.remove(engine, "checkout", checkout)
        event.remove(engine, "checkin", checkin)


async def test_a_request_of_a_hundred_keys_is_one_round_trip(database_store: DatabaseStoreFactory) -> None:
    """On PostgreSQL in autocommit mode (no BEGIN, no COMMIT); SQLite's transaction costs none."""
    store = database_store()
    on_sqlite = store._loop_connection is None
    groups = [_group(f"attempt-{n}") for n in range(100)]
    async with _sent(store) as sent:
        assert await store.reserve(groups) == [None] * 100
    assert sent == (["BEGIN", "INSERT", "COMMIT"] if on_sqlite else ["statement"])
    async with _sent(store) as sent:
        await store.settle({f"attempt-{n}": {"event_id": "done"} for n in range(100)}, [])
        await store._commits.drain()  # the final answers are written behind the request: wait for them
    updates = ["BEGIN", *["UPDATE"] * 100, "COMMIT"]
    assert sent == (updates if on_sqlite else ["statement"])  # pipelined


async def test_keys_found_taken_are_read_and_locked_in_a_transaction(
    database_store: DatabaseStoreFactory,
) -> None:
    store = database_store()
    await store.reserve([_group("taken")])
    async with _sent(store) as sent:
        answers = await store.reserve([_group("new"), _group("taken", answer="again")])
    assert answers == [None, (0, {"event_id": "first-taken"})]
    if store._loop_connection is not None:
        assert sent == ["statement", "BEGIN", "statement", "COMMIT"]
    else:
        assert sent == ["BEGIN", "INSERT", "SELECT", "COMMIT"]


async def test_a_failure_after_the_insert_gives_its_keys_back(
    database_store: DatabaseStoreFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On PostgreSQL the insert commits on its own: a failure in the locking part that follows
    (a deadlock, a lost connection) must not leave keys of events never published."""
    store = database_store()
    await store.reserve([_group("taken")])

    def deadlock(*_: Any) -> None:
        raise RuntimeError("deadlock detected")

    monkeypatch.setattr(store._sql, "read_for_update", deadlock)
    with pytest.raises(RuntimeError, match="deadlock"):
        await store.reserve([_group("new"), _group("taken", answer="again")])
    monkeypatch.undo()
    assert await store.reserve([_group("new", answer="retried")]) == [None]


async def test_concurrent_requests_share_transactions(database_store: DatabaseStoreFactory) -> None:
    """Group commit: reservations arriving while one write is under way go in the next one."""
    store = database_store()
    async with _sent(store) as sent:
        answers = await asyncio.gather(
            *(store.reserve([_group(f"c-{n}"), _group("shared")]) for n in range(20))
        )
    assert answers[0] == [None, None]
    assert all(later == [None, (0, {"event_id": "first-shared"})] for later in answers[1:])
    # at most two group commits (the first request may go alone): an insert each and, on
    # PostgreSQL, the locking read of `shared`, found taken
    if store._loop_connection is None:
        assert sent.count("INSERT") <= 2
    else:
        assert sent.count("statement") <= 3


async def test_a_connection_is_checked_before_use_only_after_it_was_idle(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(engine_module, "IDLE_BEFORE_PING", 0.5)
    async with _database_stores(postgres_url) as database_store:
        store = database_store()
        for n in range(10):  # psycopg prepares a statement run often (one more round trip, once)
            assert await store.reserve([_group(f"warm-{n}")]) == [None]
        async with _sent(store) as sent:
            for n in range(5):
                assert await store.reserve([_group(f"busy-{n}")]) == [None]
        assert sent == ["statement"] * 5  # in steady use: the inserts only
        await asyncio.sleep(0.6)
        async with _sent(store) as sent:
            assert await store.reserve([_group("after-a-pause")]) == [None]
        assert sent == ["SELECT", "statement"]  # the check, then the insert


@asynccontextmanager
async def _store_across_a_restart() -> AsyncIterator[DatabaseIdempotencyStore]:
    """A store on a PostgreSQL server of its own that reserved `before`, then saw the server
    restarted (its pooled connection now dead)."""
    server = PostgresServer(Path(tempfile.mkdtemp(prefix="idempotency-restart-")))
    try:
        server.start()
        migrations.upgrade(server.url)
        store = DatabaseIdempotencyStore.for_database(server.url, timedelta(hours=1))
        assert await store.reserve([_group("before")]) == [None]
        server.stop()
        server.start()
        yield store
        await store.close()
    finally:
        server.remove()


async def test_the_database_store_carries_on_after_a_database_restart(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(engine_module, "IDLE_BEFORE_PING", 0.1)
    async with _store_across_a_restart() as store:
        await asyncio.sleep(0.2)  # the pooled connection, idle meanwhile, is found dead and replaced
        answers = await store.reserve([_group("before", answer="again"), _group("after")])
        assert answers == [(0, {"event_id": "first-before"}), None]


async def test_a_connection_lost_in_use_fails_one_write_and_is_replaced(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(engine_module, "IDLE_BEFORE_PING", 3600.0)  # in steady use: never checked
    async with _store_across_a_restart() as store:
        with pytest.raises(psycopg.OperationalError):
            await store.reserve([_group("lost")])
        assert await store.reserve([_group("after")]) == [None]
        assert await store.reserve([_group("before", answer="again")]) == [(0, {"event_id": "first-before"})]
    assert not [record for record in caplog.records if record.levelname == "ERROR"]


def _reserve_in_another_process(directory: Path, key: str) -> None:
    store = HostIdempotencyStore(directory, timedelta(hours=1), 1000)
    assert asyncio.run(store.reserve([_group(key, answer="other-process")])) == [None]


async def test_the_host_store_is_shared_by_processes(tmp_path: Path) -> None:
    store = HostIdempotencyStore(tmp_path / "keys", timedelta(hours=1), 1000)
    assert await store.reserve([_group("here")]) == [None]
    worker = multiprocessing.get_context("spawn").Process(
        target=_reserve_in_another_process, args=(tmp_path / "keys", "there")
    )
    worker.start()
    worker.join(timeout=60)
    assert worker.exitcode == 0
    answers = await store.reserve([_group("there", answer="late"), _group("here", answer="late")])
    assert answers == [(0, {"event_id": "other-process-there"}), (0, {"event_id": "first-here"})]


async def test_the_host_store_keeps_at_most_max_keys_dropping_the_oldest(tmp_path: Path) -> None:
    store = HostIdempotencyStore(tmp_path / "keys", timedelta(hours=1), max_keys=10)
    for n in range(25):
        assert await store.reserve([_group(f"key-{n}")]) == [None]
    assert store.count() == 10
    assert await store.reserve([_group("key-24", answer="again")]) == [(0, {"event_id": "first-key-24"})]
    assert await store.reserve([_group("key-0", answer="again")]) == [None]  # forgotten, as the bound says


async def test_the_host_store_removes_expired_keys_as_keys_are_added(tmp_path: Path) -> None:
    now = [1_000_000.0]
    store = HostIdempotencyStore(tmp_path / "keys", timedelta(seconds=10), 1000, clock=lambda: now[0])
    await store.reserve([_group(f"old-{n}") for n in range(50)])
    now[0] += 11
    await store.reserve([_group("new")])
    assert store.count() == 1


async def test_a_key_the_host_store_took_over_is_not_removed_with_its_old_expiry(tmp_path: Path) -> None:
    now = [1_000_000.0]
    store = HostIdempotencyStore(tmp_path / "keys", timedelta(seconds=10), 1000, clock=lambda: now[0])
    await store.reserve([_group("key")])
    now[0] += 11
    assert await store.reserve([_group("key", answer="second")]) == [None]  # expired: taken over
    await store.reserve([_group("other")])  # removes expired keys: not the one taken over
    assert await store.reserve([_group("key", answer="third")]) == [(0, {"event_id": "second-key"})]
    assert store.count() == 2


async def test_the_host_and_memory_stores_purge_expired_keys_while_idle(tmp_path: Path) -> None:
    now = [1_000_000.0]
    host = HostIdempotencyStore(tmp_path / "keys", timedelta(seconds=10), 1000, clock=lambda: now[0])
    await host.reserve([_group(f"old-{n}") for n in range(50)])
    now[0] += 6
    await host.reserve([_group("young")])
    now[0] += 5
    assert await host.purge_expired() == 50  # no request needed to free them
    assert host.count() == 1

    memory = MemoryIdempotencyStore(timedelta(milliseconds=50), 1000)
    await memory.reserve([_group("a"), _group("b")])
    await asyncio.sleep(0.1)
    await memory.reserve([_group("c")])
    assert await memory.purge_expired() == 2
    assert await memory.reserve([_group("c", answer="again")]) == [(0, {"event_id": "first-c"})]


async def test_the_host_store_takes_keys_longer_than_lmdb_allows(tmp_path: Path) -> None:
    store = HostIdempotencyStore(tmp_path / "keys", timedelta(hours=1), 1000)
    long_key = "k" * 2000
    assert await store.reserve([_group(long_key)]) == [None]
    await store.settle({long_key: {"event_id": "final"}}, [])
    assert await store.reserve([_group(long_key, answer="again")]) == [(0, {"event_id": "final"})]


async def test_the_database_store_purges_expired_keys(database_store: DatabaseStoreFactory) -> None:
    expired = database_store(timedelta(seconds=-1))
    await expired.reserve([_group("old-1"), _group("old-2")])
    live = database_store()
    await live.reserve([_group("new")])
    assert await live.purge_expired() == 2
    assert await live.reserve([_group("new", answer="again")]) == [(0, {"event_id": "first-new"})]


async def test_a_purge_on_postgresql_waits_for_no_group_commit(postgres_url: str) -> None:
    """The purge (a delete that may take long) and the group commits have a connection each."""
    async with _database_stores(postgres_url) as database_store:
        store = database_store(timedelta(seconds=-1))
        await store.reserve([_group("old")])
        connection = store._loop_connection
        assert connection is not None
        async with connection.cursor():  # a group commit's turn, held
            assert await asyncio.wait_for(store.purge_expired(), timeout=10) == 1
