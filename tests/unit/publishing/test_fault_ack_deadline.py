"""KAFKA_FAULT_ACK_DEADLINE: a request stops waiting for acknowledgements early only while a broker
connection has failed lately; otherwise it waits for Kafka as long as KAFKA_PRODUCER_TIMEOUT allows."""

from __future__ import annotations

import asyncio
import time

from app.publishing.producer import Delivery
from app.publishing.publisher import wait_for_reports


def _delivery(records: int, timeouts: list[int]) -> Delivery:
    loop = asyncio.get_running_loop()
    return Delivery(
        loop,
        ["topic"] * records,
        lambda done: done.set_result(None),
        lambda reason: None,
        lambda: timeouts.append(1),
    )


async def test_a_broker_failure_cuts_the_wait_short_at_the_deadline() -> None:
    timeouts: list[int] = []
    delivery = _delivery(2, timeouts)
    delivery.settle(0, 0.005)
    started = time.monotonic()
    cut_short = await wait_for_reports(delivery, 10.0, 0.2, lambda: time.monotonic())
    assert cut_short
    assert 0.2 <= time.monotonic() - started < 2.0
    assert delivery.outcomes == [0.005, None]
    assert timeouts == []  # not a timeout: no producer replacement is asked for


async def test_without_a_broker_failure_the_request_waits_for_kafka() -> None:
    timeouts: list[int] = []
    delivery = _delivery(1, timeouts)
    asyncio.get_running_loop().call_later(0.5, delivery.settle, 0, 0.5)
    assert not await wait_for_reports(delivery, 10.0, 0.1, lambda: -1e9)
    assert delivery.outcomes == [0.5]


async def test_a_broker_failing_after_the_deadline_still_cuts_the_wait_short() -> None:
    delivery = _delivery(1, [])
    failed_at = [-1e9]
    asyncio.get_running_loop().call_later(0.4, lambda: failed_at.__setitem__(0, time.monotonic()))
    started = time.monotonic()
    assert await wait_for_reports(delivery, 10.0, 0.1, lambda: failed_at[0])
    assert time.monotonic() - started < 2.0


async def test_switched_off_the_wait_ends_only_with_the_reports_or_the_timeout() -> None:
    timeouts: list[int] = []
    delivery = _delivery(1, timeouts)
    assert not await wait_for_reports(delivery, 0.3, 0.0, lambda: time.monotonic())
    assert delivery.outcomes == [None]
    assert timeouts == [1]  # the full wait ran out: a timeout, as before


async def test_a_step_ends_as_soon_as_the_last_report_arrives() -> None:
    delivery = _delivery(1, [])
    asyncio.get_running_loop().call_later(0.05, delivery.settle, 0, 0.05)
    started = time.monotonic()
    assert await delivery.wait(5.0, final=False)
    assert time.monotonic() - started < 1.0
