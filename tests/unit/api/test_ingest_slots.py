"""The ingest slots' queue: first come first served, bounded in length and in time."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from app.api.load_shedding import IngestSlots


def _slots(limit: int = 1, max_queued: int = 2, queue_timeout: float = 5.0) -> IngestSlots:
    return IngestSlots(limit, CollectorRegistry(), max_queued=max_queued, queue_timeout=queue_timeout)


async def _started(coroutine: Coroutine[Any, Any, bool]) -> asyncio.Task[bool]:
    task = asyncio.ensure_future(coroutine)
    await asyncio.sleep(0)  # it runs until it waits
    return task


async def test_a_freed_slot_goes_to_the_longest_waiting_request_not_to_a_newcomer() -> None:
    slots = _slots(limit=1, max_queued=2)
    assert await slots.take()
    first = await _started(slots.take())
    second = await _started(slots.take())
    assert slots.queued == 2
    assert slots.waiting._value.get() == 2
    assert not first.done()

    slots.release()
    assert slots.in_progress == 1  # handed over, not freed
    assert not slots.take_now()  # a newcomer finds none free while the others wait
    assert await first is True
    assert not second.done()
    slots.release()
    assert await second is True
    slots.release()
    assert slots.in_progress == 0
    assert slots.queued == 0
    assert slots.waited._value.get() == 2
    assert slots.waiting._value.get() == 0


async def test_past_the_queue_a_request_is_refused_at_once() -> None:
    slots = _slots(limit=1, max_queued=1)
    assert await slots.take()
    waiting = await _started(slots.take())
    assert await slots.take() is False
    assert slots.shed._value.get() == 1
    slots.release()
    assert await waiting is True


async def test_a_request_that_waited_too_long_is_refused_and_leaves_the_queue() -> None:
    slots = _slots(limit=1, max_queued=1, queue_timeout=0.05)
    assert await slots.take()
    started = asyncio.get_running_loop().time()
    assert await slots.take() is False
    assert asyncio.get_running_loop().time() - started >= 0.05
    assert slots.queued == 0
    assert not slots._turns
    assert slots.shed._value.get() == 1
    slots.release()  # nobody waits: the slot is free again
    assert slots.in_progress == 0
    assert slots.take_now()


async def test_a_cancelled_waiter_holds_nothing_even_when_handed_a_slot_as_it_is_cancelled() -> None:
    slots = _slots(limit=1, max_queued=2)
    assert await slots.take()
    gone = await _started(slots.take())
    handed = await _started(slots.take())
    gone.cancel()
    await asyncio.sleep(0)
    slots.release()  # skips the cancelled waiter
    assert await handed is True
    assert gone.cancelled()

    unlucky = await _started(slots.take())
    slots.release()  # hands the slot over ...
    unlucky.cancel()  # ... and the request is cancelled before it runs again
    with pytest.raises(asyncio.CancelledError):
        await unlucky
    assert slots.in_progress == 0  # passed on, then freed: nobody else waited
    assert slots.queued == 0


async def test_no_queue_refuses_at_once_and_no_limit_never_waits() -> None:
    refusing = _slots(limit=1, max_queued=0)
    assert await refusing.take()
    assert await refusing.take() is False
    unlimited = _slots(limit=0)
    assert all([await unlimited.take() for _ in range(1000)])
    no_wait = _slots(limit=1, max_queued=5, queue_timeout=0)
    assert await no_wait.take()
    assert await no_wait.take() is False
