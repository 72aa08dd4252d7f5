"""Background loops: a step run again and again in a task of its own, until stopped.

Every periodic job of a worker (routing-rule and API-key polls, the spool relay, readiness, the
idempotency purge, the worker report) is one of these, so each starts, pauses, survives a failing
step and stops the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

Result = TypeVar("Result")


class BackgroundLoop(Generic[Result]):
    """Runs `step` in a task named `name`; between steps, waits `interval` seconds.

    - `delay_first`: wait before the first step too (a poll right after a load has nothing to find);
    - `wake`: an event that ends the wait early (new work arrived); it is cleared before each wait;
    - `again_now`: given a step's result, True to run the next step at once (more work is due).
    A step that raises is logged and the loop goes on: one bad round must not end the job.
    """

    def __init__(
        self,
        name: str,
        step: Callable[[], Awaitable[Result]],
        interval: float,
        *,
        delay_first: bool = False,
        wake: asyncio.Event | None = None,
        again_now: Callable[[Result], bool] | None = None,
        logger: logging.Logger | None = None,
    ) -> None:
        self.name = name
        self._step = step
        self._interval = interval
        self._delay_first = delay_first
        self._wake = wake
        self._again_now = again_now
        self._logger = logger or logging.getLogger(__name__)
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self, grace: float = 0.0) -> None:
        """Stop: with `grace`, let a step in progress finish (at most `grace` seconds); then cancel."""
        self._stopping.set()
        if self._wake is not None:
            self._wake.set()
        if self._task is None:
            return
        if grace > 0:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(self._task), timeout=grace)
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task

    async def _run(self) -> None:
        if self._delay_first:
            await self._pause()
        while not self._stopping.is_set():
            try:
                result = await self._step()
            except Exception:  # logged; the next round tries again
                self._logger.exception("%s: round failed", self.name)
            else:
                if self._again_now is not None and self._again_now(result):
                    continue
            await self._pause()

    async def _pause(self) -> None:
        if self._stopping.is_set():
            return
        if self._wake is None:
            await asyncio.sleep(self._interval)
            return
        self._wake.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout=self._interval)
