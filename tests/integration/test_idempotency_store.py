"""The database idempotency store on SQLite and PostgreSQL: the group semantics of `reserve`, and one
transaction per request however many keys it carries."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, event

from app.database.engine import create_database_engine
from app.idempotency.store import DatabaseIdempotencyStore, KeyGroup

pytestmark = pytest.mark.integration


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = create_database_engine(database_url)
    yield engine
    engine.dispose()


def _store(engine: Engine, window: timedelta = timedelta(hours=1)) -> DatabaseIdempotencyStore:
    return DatabaseIdempotencyStore(engine, window)


def _group(*keys: str, answer: str = "first") -> KeyGroup:
    return [(key, {"event_id": f"{answer}-{key}"}) for key in keys]


async def test_groups_reserve_in_order_and_a_repeat_within_the_call_is_known(engine: Engine) -> None:
    store = _store(engine)
    answers = await store.reserve([_group("a"), _group("b"), _group("a", answer="second")])
    assert answers == [None, None, (0, {"event_id": "first-a"})]
    again = await store.reserve([_group("b", answer="later"), _group("c")])
    assert again == [(0, {"event_id": "first-b"}), None]


async def test_a_known_key_frees_the_rest_of_its_group(engine: Engine) -> None:
    store = _store(engine)
    assert await store.reserve([_group("live")]) == [None]
    answers = await store.reserve([_group("x", "live", "y", answer="mine")])
    assert answers == [(1, {"event_id": "first-live"})]
    # x and y were not kept: another request takes them.
    assert await store.reserve([_group("x", "y", answer="other")]) == [None]


async def test_settle_completes_and_releases(engine: Engine) -> None:
    store = _store(engine)
    await store.reserve([_group("done"), _group("failed")])
    await store.settle({"done": {"event_id": "final"}}, ["failed"])
    answers = await store.reserve([_group("done", answer="retry"), _group("failed", answer="retry")])
    assert answers == [(0, {"event_id": "final"}), None]


async def test_an_expired_key_is_taken_over(engine: Engine) -> None:
    store = _store(engine, window=timedelta(seconds=-1))  # everything reserved is expired at once
    assert await store.reserve([_group("old")]) == [None]
    assert await store.reserve([_group("old", answer="new")]) == [None]


async def test_a_request_of_a_hundred_keys_is_one_transaction(engine: Engine) -> None:
    store = _store(engine)
    commits: list[Any] = []
    event.listen(engine, "commit", lambda connection: commits.append(connection))
    groups = [_group(f"attempt-{n}") for n in range(100)]
    assert await store.reserve(groups) == [None] * 100
    assert len(commits) == 1
    await store.settle({f"attempt-{n}": {"event_id": "done"} for n in range(100)}, [])
    assert len(commits) == 2
