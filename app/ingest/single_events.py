"""Single events of concurrent requests, published together.

Publishing one event costs mostly per-call work: reserving its keys, the delivery core's checks
(in-flight bound, spool backlog, circuit breaker, retries), one `Delivery` and its wait, the
reports and the metrics. Under load many single-event requests are served in the same turn of the
event loop; each hands its event here, and at the next turn the events gathered so far go through
that work once, as a batch's events do, each request still getting its own outcome (a key seen
before answers `duplicate`, a refused event its own failure). At a quiet moment a group is one
event, a loop turn later.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

from event_models.models import BaseEvent

AckLevel = Literal["kafka", "spool"]
# An event's idempotency keys, as (kind, key).
EventKeys = list[tuple[Literal["request", "attempt", "identity"], str]]
# A bound on a group, so that one over MAX_IN_FLIGHT_RECORDS (refused whole, 429) stays small.
MAX_GROUP = 64
Outcome = TypeVar("Outcome")


@dataclass(slots=True)
class WaitingEvent:
    """One request's event, its idempotency keys and trace context."""

    event: BaseEvent
    keys: EventKeys
    traceparent: str | None


class SingleEventGroups(Generic[Outcome]):
    """Gathers the events of one loop turn by ack level and publishes each group with `publish`."""

    def __init__(self, publish: Callable[[list[WaitingEvent], AckLevel], Awaitable[list[Outcome]]]) -> None:
        self._publish = publish
        self._open: dict[AckLevel, tuple[list[WaitingEvent], list[asyncio.Future[Outcome]]]] = {}
        self._running: set[asyncio.Task[None]] = set()  # referenced until done (the loop keeps weak ones)

    async def submit(self, waiting: WaitingEvent, ack: AckLevel) -> Outcome:
        """Publish with the other events of this loop turn; the outcome of this one."""
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[Outcome] = loop.create_future()
        group = self._open.get(ack)
        if group is None:
            group = self._open[ack] = ([], [])
            # A context of its own: the group serves several requests, none of whose ids its log
            # lines should carry.
            loop.call_soon(self._close, ack, group, context=contextvars.Context())
        events, answers = group
        events.append(waiting)
        answers.append(answer)
        if len(events) >= MAX_GROUP:
            self._close(ack, group)
        return await answer

    def _close(self, ack: AckLevel, group: tuple[list[WaitingEvent], list[asyncio.Future[Outcome]]]) -> None:
        if self._open.get(ack) is not group:  # closed already when it filled up
            return
        del self._open[ack]
        task = asyncio.get_running_loop().create_task(self._run(*group, ack), context=contextvars.Context())
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _run(
        self, events: list[WaitingEvent], answers: list[asyncio.Future[Outcome]], ack: AckLevel
    ) -> None:
        try:
            outcomes = await self._publish(events, ack)
        except Exception as exc:  # each request answers it as its own (a 500)
            for answer in answers:
                if not answer.done():
                    answer.set_exception(exc)
            return
        except asyncio.CancelledError:  # the loop is closing
            for answer in answers:
                answer.cancel()
            raise
        for answer, outcome in zip(answers, outcomes, strict=True):
            if not answer.done():  # its request may have been cancelled meanwhile
                answer.set_result(outcome)
