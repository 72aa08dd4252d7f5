"""The memory store keeps keys compact: answers come back as they went in, the bound drops the
oldest keys first, and released or taken-over keys do not upset that order."""

from __future__ import annotations

import asyncio
import random
import sys
import uuid
from datetime import timedelta

import pytest

from app.idempotency import memory_store
from app.idempotency.memory_store import MemoryIdempotencyStore
from app.idempotency.store import StoredResult


async def _stored_and_read_back(answer: StoredResult) -> StoredResult:
    store = MemoryIdempotencyStore(timedelta(hours=1), 100)
    assert await store.reserve([[("k", {"event_id": "provisional"})]]) == [None]
    await store.settle({"k": answer}, [])
    (known,) = await store.reserve([[("k", {"event_id": "repeat"})]])
    assert known is not None
    return known[1]


async def test_answers_read_back_as_they_were_stored() -> None:
    event_id = str(uuid.uuid4())
    answers: list[StoredResult] = [
        {"event_id": event_id, "status": "accepted", "topics": ["user.attempts", "audit.all"]},
        {"event_id": event_id, "status": "in_progress", "topics": []},
        {"event_id": "not-a-uuid", "status": "spooled"},
        {"event_id": event_id.upper()},  # not canonical: kept as text, not as 16 bytes
        {"event_id": event_id, "status": "accepted", "topics": ["t"], "extra": {"n": 1}},  # other shape: JSON
        {"event_id": None, "status": "accepted"},
        {"event_id": event_id, "status": None, "topics": ["t"]},  # a key present with None stays so
        {"event_id": event_id, "status": "accepted", "topics": [["not", "a", "topic"]]},  # unhashable
    ]
    for answer in answers:
        assert await _stored_and_read_back(answer) == answer


async def test_the_bound_drops_the_oldest_keys_first() -> None:
    store = MemoryIdempotencyStore(timedelta(hours=1), max_keys=10)
    for n in range(25):
        assert await store.reserve([[(f"key-{n}", {"event_id": f"e{n}"})]]) == [None]
    assert len(store) == 10
    assert await store.reserve([[("key-24", {"event_id": "again"})]]) == [(0, {"event_id": "e24"})]
    assert await store.reserve([[("key-15", {"event_id": "again"})]]) == [(0, {"event_id": "e15"})]
    assert await store.reserve([[("key-14", {"event_id": "again"})]]) == [None]  # forgotten


async def test_released_keys_are_free_and_leave_the_arrival_queue() -> None:
    store = MemoryIdempotencyStore(timedelta(hours=1), max_keys=1000)
    for n in range(50):
        await store.reserve([[(f"k{n}", {"event_id": "x"})]])
        await store.settle({}, [f"k{n}"])
    assert len(store) == 0
    assert len(store._arrivals) <= 1  # each released key's reference went at the next reserve
    assert await store.reserve([[("k3", {"event_id": "retry"})]]) == [None]


async def test_expired_keys_are_taken_over_and_purged() -> None:
    store = MemoryIdempotencyStore(timedelta(milliseconds=50), 1000)
    await store.reserve([[("a", {"event_id": "first"})], [("b", {"event_id": "first"})]])
    await asyncio.sleep(0.1)
    assert await store.reserve([[("a", {"event_id": "second"})]]) == [None]  # taken over
    assert len(store) == 1  # b, expired, went with a's first arrival when a was taken over
    assert await store.purge_expired() == 0
    assert await store.reserve([[("a", {"event_id": "third"})]]) == [(0, {"event_id": "second"})]


async def test_shards_stay_compact_while_keys_come_and_go_at_the_bound(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """At the bound every new key evicts an old one: without the copies, CPython rebuilds each
    dict at three times its keys and the tables double."""
    monkeypatch.setattr(memory_store, "COMPACT_FROM_KEYS", 100)
    store = MemoryIdempotencyStore(timedelta(hours=1), max_keys=50_000)
    for batch in range(2000):
        await store.reserve([[(f"k{batch}-{n}", {"event_id": "x"})] for n in range(100)])
    assert len(store) == 50_000
    table_bytes = sum(sys.getsizeof(shard) for shard in store._shards)
    assert table_bytes / len(store) < 75  # ~95 bytes a key without the copies


async def test_the_key_count_follows_every_way_keys_come_and_go() -> None:
    """The count is kept, not summed over the shards: after reservations, repeats, releases,
    settles of dropped keys, take-overs, purges and the bound it equals the keys held."""
    rng = random.Random(3)
    store = MemoryIdempotencyStore(timedelta(milliseconds=20), max_keys=300)
    for step in range(3000):
        key = f"k{rng.randrange(600)}"
        choice = rng.random()
        if choice < 0.6:
            await store.reserve([[(key, {"event_id": "x"})], [(f"{key}b", {"event_id": "y"})]])
            assert len(store) <= 300  # the bound holds after each reservation (a settle may pass it)
        elif choice < 0.8:
            await store.settle({key: {"event_id": "z", "status": "accepted", "topics": []}}, [])
        elif choice < 0.95:
            await store.settle({}, [key])
        else:
            await store.purge_expired()
        if step % 500 == 0:
            await asyncio.sleep(0.03)  # let keys expire now and then
        assert len(store) == sum(len(shard) for shard in store._shards)
    await store.close()
    assert len(store) == 0
