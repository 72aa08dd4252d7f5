"""The circuit breaker: opens on outages only, answers at once while open, one trial when half-open."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from app.publishing.breaker import DeliveryBreaker
from app.publishing.errors import BrokerUnavailableError


async def _fail(breaker: DeliveryBreaker) -> None:
    """A delivery that reports an outage: counted, and no exception reaches the caller."""
    async with breaker.guard() as attempt:
        attempt.failed("broker down")


async def test_opens_after_the_threshold_and_refuses_at_once() -> None:
    states: list[str] = []
    breaker = DeliveryBreaker(3, timedelta(seconds=60), on_change=states.append)
    for _ in range(3):
        await _fail(breaker)

    assert breaker.state == "open"
    assert states == ["open"]
    with pytest.raises(BrokerUnavailableError) as raised:
        async with breaker.guard():
            pytest.fail("the body must not run while the breaker is open")
    assert 59 <= raised.value.retry_after <= 60


async def test_other_errors_do_not_count() -> None:
    breaker = DeliveryBreaker(1, timedelta(seconds=60))
    with pytest.raises(ValueError, match="bad record"):
        async with breaker.guard():
            raise ValueError("bad record")
    assert breaker.state == "closed"


async def test_half_open_lets_one_trial_through_and_closes_on_success() -> None:
    breaker = DeliveryBreaker(1, timedelta(milliseconds=50))
    await _fail(breaker)
    await asyncio.sleep(0.06)

    trial_running = asyncio.Event()
    release = asyncio.Event()

    async def trial() -> None:
        async with breaker.guard():
            trial_running.set()
            await release.wait()

    task = asyncio.create_task(trial())
    await trial_running.wait()
    with pytest.raises(BrokerUnavailableError):  # a second caller while the trial runs
        async with breaker.guard():
            pass
    release.set()
    await task

    assert breaker.state == "closed"
    assert [state for _, state in breaker.transitions] == ["open", "half-open", "closed"]


async def test_failed_trial_opens_again() -> None:
    breaker = DeliveryBreaker(1, timedelta(milliseconds=50))
    await _fail(breaker)
    await asyncio.sleep(0.06)
    await _fail(breaker)

    assert breaker.state == "open"
