"""BackgroundLoop: the one way every periodic job of a worker runs, pauses, survives and stops."""

from __future__ import annotations

import asyncio
import logging

import pytest

from app.background import BackgroundLoop


async def test_a_failing_round_is_logged_and_the_loop_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    rounds: list[int] = []

    async def step() -> None:
        rounds.append(len(rounds))
        if len(rounds) == 2:
            raise RuntimeError("database away")

    loop = BackgroundLoop("poll", step, 0.01)
    loop.start()
    await asyncio.sleep(0.2)
    await loop.stop()
    assert len(rounds) > 3
    assert "poll: round failed" in caplog.text
    count = len(rounds)
    await asyncio.sleep(0.05)
    assert len(rounds) == count  # stopped means stopped


async def test_delay_first_waits_before_the_first_round() -> None:
    rounds: list[float] = []

    async def step() -> None:
        rounds.append(asyncio.get_running_loop().time())

    loop = BackgroundLoop("poll", step, 0.3, delay_first=True)
    loop.start()
    await asyncio.sleep(0.1)
    assert rounds == []
    await loop.stop()


async def test_wake_ends_the_pause_and_again_now_skips_it() -> None:
    wake = asyncio.Event()
    results = [3, 0, 0]
    rounds: list[int] = []

    async def step() -> int:
        rounds.append(1)
        return results.pop(0) if results else 0

    loop = BackgroundLoop("relay", step, 60, wake=wake, again_now=bool)
    loop.start()
    await asyncio.sleep(0.05)
    assert len(rounds) == 2  # 3 delivered: again at once; then 0: wait (60 s)
    wake.set()
    await asyncio.sleep(0.05)
    assert len(rounds) == 3  # woken early
    await loop.stop()


async def test_stop_with_grace_lets_the_round_in_progress_finish(caplog: pytest.LogCaptureFixture) -> None:
    finished: list[bool] = []

    async def step() -> None:
        await asyncio.sleep(0.1)
        finished.append(True)

    loop = BackgroundLoop("relay", step, 60)
    loop.start()
    await asyncio.sleep(0.02)
    await loop.stop(grace=5)
    assert finished == [True]
    with caplog.at_level(logging.ERROR):
        assert "round failed" not in caplog.text
