"""The spool table on SQLite and PostgreSQL: order, capacity, claims with leases, migrations."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import event, inspect

from alembic import command
from app.database import migrations
from app.database.engine import DatabaseNotMigratedError, check_schema, create_database_engine
from app.spool.service import Spool
from app.spool.store import NewRecord, SpoolFullError, SpoolStats, SpoolStore

pytestmark = pytest.mark.integration


def _record(n: int, key: bytes = b"user-1") -> NewRecord:
    return NewRecord(
        event_id=f"00000000-0000-0000-0000-{n:012d}",
        topic="user.attempts",
        key=key,
        value=bytes([0, 255, n % 256]) + b"payload",
        headers=[("event_id", f"id-{n}"), ("content_type", "application/json")],
        reason="test",
    )


@pytest.fixture
def store(database_url: str) -> Iterator[SpoolStore]:
    engine = create_database_engine(database_url)
    yield SpoolStore(engine, max_records=10)
    engine.dispose()


def test_records_come_back_in_order_byte_for_byte(store: SpoolStore) -> None:
    store.add([_record(n) for n in range(5)])

    rows = store.claim_due("me", limit=10, lease=timedelta(seconds=30))

    assert [row.event_id[-1] for row in rows] == ["0", "1", "2", "3", "4"]
    assert rows[2].value == bytes([0, 255, 2]) + b"payload"
    assert rows[2].key == b"user-1"
    assert rows[2].headers == [["event_id", "id-2"], ["content_type", "application/json"]]
    assert store.stats().depth == 5
    assert store.stats().oldest is not None


def test_capacity_is_a_hard_bound(store: SpoolStore) -> None:
    store.add([_record(n) for n in range(8)])
    with pytest.raises(SpoolFullError, match="limit is 10"):
        store.add([_record(n) for n in range(3)])
    assert store.stats().depth == 8


def test_claimed_rows_are_not_claimed_again_until_the_lease_ends(store: SpoolStore) -> None:
    store.add([_record(n, key=f"user-{n}".encode()) for n in range(4)])

    first = store.claim_due("a", limit=2, lease=timedelta(seconds=30))
    second = store.claim_due("b", limit=10, lease=timedelta(seconds=30))
    expired = store.claim_due("c", limit=10, lease=timedelta(seconds=-1))

    assert [row.id for row in first] == sorted(row.id for row in first)
    assert not {row.id for row in first} & {row.id for row in second}
    assert len(first) + len(second) == 4
    assert expired == []  # everything is held by a live lease
    # A negative lease is an already-expired claim: the next relay takes those rows over.
    store.add([_record(9, key=b"user-9")])
    crashed = store.claim_due("crashed", limit=1, lease=timedelta(seconds=-1))
    assert [row.event_id for row in store.claim_due("d", limit=10, lease=timedelta(seconds=30))] == [
        crashed[0].event_id
    ]


def test_delete_release_and_redirect(store: SpoolStore) -> None:
    store.add([_record(n, key=f"user-{n}".encode()) for n in range(3)])
    rows = store.claim_due("me", limit=10, lease=timedelta(seconds=30))

    store.delete([rows[0].id])
    store.release([rows[1].id], "broker down", datetime.now(UTC) + timedelta(hours=1))
    store.redirect_to_dlq([rows[2].id], "MSG_SIZE_TOO_LARGE")

    due = store.claim_due("me2", limit=10, lease=timedelta(seconds=30))
    assert [row.id for row in due] == [rows[2].id]
    assert due[0].dlq_reason == "MSG_SIZE_TOO_LARGE"
    assert store.stats().depth == 2


def test_keys_with_backlog(store: SpoolStore) -> None:
    store.add([_record(1, b"alice"), _record(2, b"bob")])
    assert store.keys_with_backlog([b"alice", b"carol"]) == {b"alice"}
    assert store.keys_with_backlog([]) == set()


def test_migrations_go_down_and_up_again(database_url: str) -> None:
    engine = create_database_engine(database_url)
    check_schema(engine)

    migrations.downgrade(database_url, "base")
    assert "spooled_records" not in inspect(engine).get_table_names()
    with pytest.raises(DatabaseNotMigratedError, match="event-ingest migrate"):
        check_schema(engine)

    migrations.upgrade(database_url)
    check_schema(engine)
    engine.dispose()


def test_the_migrations_build_what_the_models_describe(database_url: str) -> None:
    """A table or column added to app/database/schema.py without its migration fails here."""
    command.check(migrations.alembic_config(database_url))  # raises when autogenerate finds a difference


def test_a_key_waits_behind_its_older_records(store: SpoolStore) -> None:
    store.add([_record(1, b"alice"), _record(2, b"alice"), _record(3, b"bob")])
    first = store.claim_due("a", limit=1, lease=timedelta(seconds=30))
    assert first[0].event_id.endswith("1")

    # alice's second record waits while her first is claimed; bob's is free.
    second = store.claim_due("b", limit=10, lease=timedelta(seconds=30))
    assert [row.event_id[-1] for row in second] == ["3"]

    # alice's first failed and waits for a retry: her second still waits behind it.
    store.release([first[0].id], "broker down", datetime.now(UTC) + timedelta(hours=1))
    assert store.claim_due("c", limit=10, lease=timedelta(seconds=30)) == []


def test_claims_of_a_dead_relay_can_be_released_at_once(store: SpoolStore) -> None:
    store.add([_record(1, b"a"), _record(2, b"b")])
    store.claim_due("host:999999", limit=1, lease=timedelta(minutes=10))
    assert store.claim_owners() == {"host:999999"}

    assert store.release_claims_of(["host:999999"]) == 1

    assert store.claim_owners() == set()
    assert len(store.claim_due("host:1", limit=10, lease=timedelta(seconds=30))) == 2


def test_a_release_without_an_attempt_does_not_count_one(store: SpoolStore) -> None:
    store.add([_record(1, b"a")])
    (row,) = store.claim_due("me", limit=1, lease=timedelta(seconds=30))
    store.release([row.id], "circuit breaker open", datetime.now(UTC), attempted=False)
    (again,) = store.claim_due("me", limit=1, lease=timedelta(seconds=30))
    assert again.attempts == 0
    store.release([again.id], "broker down", datetime.now(UTC))
    (third,) = store.claim_due("me", limit=1, lease=timedelta(seconds=30))
    assert third.attempts == 1


def test_concurrent_claimers_take_each_row_once_and_each_key_in_order(database_url: str) -> None:
    # Four claimers with engines of their own (as four relays in four processes) race over the rows
    # of a few keys; each holds its claim a moment, then deletes the rows (delivered).
    engines = [create_database_engine(database_url) for _ in range(4)]
    try:
        SpoolStore(engines[0], max_records=1000).add(
            [_record(n, f"user-{n % 5}".encode()) for n in range(200)]
        )
        claims: list[tuple[int, bytes, int]] = []  # (order of the claim, key, row id)
        lock = threading.Lock()
        counter = iter(range(1_000_000))

        def relay(engine_index: int) -> None:
            store = SpoolStore(engines[engine_index], max_records=1000)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                rows = store.claim_due(f"relay-{engine_index}", limit=3, lease=timedelta(seconds=30))
                if not rows:
                    if store.stats().depth == 0:
                        return
                    time.sleep(0.001)
                    continue
                with lock:
                    claims.extend((next(counter), row.key or b"", row.id) for row in rows)
                time.sleep(0.002)
                store.delete([row.id for row in rows])

        threads = [threading.Thread(target=relay, args=(index,)) for index in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=90)
    finally:
        for engine in engines:
            engine.dispose()
    ids = [row_id for _, _, row_id in claims]
    assert len(ids) == 200
    assert len(set(ids)) == 200  # no row claimed twice
    for key in {key for _, key, _ in claims}:
        in_claim_order = [row_id for _, k, row_id in sorted(claims) if k == key]
        assert in_claim_order == sorted(in_claim_order), f"{key!r} claimed out of order"


async def test_a_spool_emptied_by_the_relay_reports_no_oldest_age(store: SpoolStore) -> None:
    # Seen in the pause test: depth 0 with an age left over from the last refresh.
    spool = Spool(store)
    await spool.add([_record(1)])
    assert spool.stats.depth == 1
    spool.removed(1)
    assert spool.stats.depth == 0
    assert spool.stats_oldest_age() == 0.0


async def test_requests_spooling_together_share_one_transaction(store: SpoolStore) -> None:
    """Group commit: the writes of requests that arrive while one is being written go in one
    transaction; a request that would overfill the spool is refused alone."""
    commits: list[object] = []
    event.listen(store.engine, "commit", commits.append)
    spool = Spool(store)
    requests = [[_record(n)] for n in range(3)] + [[_record(10 + n) for n in range(8)]] + [[_record(20)]]
    answers = await asyncio.gather(*(spool.add(records) for records in requests), return_exceptions=True)
    assert [type(answer).__name__ for answer in answers] == ["NoneType"] * 3 + ["SpoolFullError", "NoneType"]
    assert len(commits) <= 2  # the first request alone, or with the others; then all the rest together
    assert store.stats().depth == 4
    assert spool.stats.depth == 4
    assert [row.event_id[-2:] for row in store.claim_due("me", limit=10, lease=timedelta(seconds=30))] == [
        "00",
        "01",
        "02",
        "20",
    ]


async def test_a_refresh_racing_a_spool_write_never_reports_it_gone(
    store: SpoolStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Seen under load as a user's event overtaking their spooled one: the relay's count ran
    before a write committed and, assigned after it, set the depth back to 0, so the next event
    skipped the backlog check and went straight to Kafka."""
    counted = threading.Event()
    count = store.stats

    def slow_count() -> SpoolStats:
        stats = count()
        counted.set()
        time.sleep(0.3)  # the write below commits meanwhile
        return stats

    monkeypatch.setattr(store, "stats", slow_count)
    spool = Spool(store)
    refresh = asyncio.create_task(spool.refresh())
    await asyncio.to_thread(counted.wait, 10)
    await spool.add([_record(1, key=b"alice")])
    await refresh
    assert spool.stats.depth >= 1
    assert await spool.keys_with_backlog([b"alice"]) == {b"alice"}
