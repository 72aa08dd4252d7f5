"""Load shedding: MAX_CONCURRENT_REQUESTS ingest requests in progress per worker, a bounded queue
of the next ones, and 503 `overloaded` past both.

MAX_IN_FLIGHT_RECORDS bounds what waits for Kafka, but only after a request's body has been read,
parsed and validated: under a flood of connections, those requests alone (a parsed batch of 100
events is a few hundred KB) would grow the worker's memory and every request's latency. This
plain ASGI middleware holds the excess before any body is read: up to MAX_QUEUED_REQUESTS wait,
first come first served, for up to REQUEST_QUEUE_TIMEOUT; the rest are refused with `Retry-After`.

Why a queue rather than refusing at once: a waiting request costs a timer and its unread body
(the server stops reading a connection past a small buffer), while a refusal costs a whole request
cycle, and clients that ignore `Retry-After` send the next at once: refusals then crowd out the
requests admitted (README, Performance: the overload run). Per worker process.
"""

from __future__ import annotations

import asyncio
from collections import deque

from prometheus_client import CollectorRegistry, Counter, Gauge
from starlette.types import ASGIApp, Receive, Scope, Send

from app.api.errors import error_response

INGEST_PREFIX = "/v1/events"
RETRY_AFTER_SECONDS = 1
# Set in a request's ASGI scope by the single-event fast path when it hands a request it holds a
# slot for on to the full stack: the middleware then lets it through without taking another.
SLOT_HELD = "event_ingest.slot_held"


class IngestSlots:
    """The ingest requests in progress in this worker, against MAX_CONCURRENT_REQUESTS, and those
    waiting for a slot: shared by the middleware and the single-event fast path
    (app/api/fast_ingest.py), which count alike.

    A slot freed while requests wait goes to the longest-waiting one directly (the count in
    progress stays at the limit), so a newcomer never overtakes the queue.
    """

    def __init__(
        self,
        limit: int,
        registry: CollectorRegistry,
        *,
        max_queued: int = 0,
        queue_timeout: float = 0.0,
    ) -> None:
        self.limit = limit  # 0: no limit
        self.max_queued = max_queued if queue_timeout > 0 else 0
        self.queue_timeout = queue_timeout
        self.in_progress = 0
        self.queued = 0  # waiting now
        self._turns: deque[asyncio.Future[bool]] = deque()  # oldest first; done ones are stale
        self.shed = Counter(
            "event_ingest_requests_shed_total",
            "Ingest requests answered 503 `overloaded`: MAX_CONCURRENT_REQUESTS were in progress "
            "and MAX_QUEUED_REQUESTS waiting, or they waited REQUEST_QUEUE_TIMEOUT in vain.",
            registry=registry,
        )
        self.waited = Counter(
            "event_ingest_requests_queued_total",
            "Ingest requests that waited for a slot because MAX_CONCURRENT_REQUESTS were in progress.",
            registry=registry,
        )
        # Moved only when requests wait (under overload), so the ordinary request pays nothing.
        self.waiting = Gauge(
            "event_ingest_requests_waiting",
            "Ingest requests waiting for a slot now (summed over workers).",
            registry=registry,
            multiprocess_mode="livesum",
        )

    @property
    def full(self) -> bool:
        return bool(self.limit) and self.in_progress >= self.limit

    def take_now(self) -> bool:
        """A slot if one is free (none is while requests wait)."""
        if self.full:
            return False
        self.in_progress += 1
        return True

    async def take(self) -> bool:
        """A slot, waiting in turn for one when all are taken; False when refused (counted)."""
        if self.take_now():
            return True
        if self.queued >= self.max_queued:
            self.shed.inc()
            return False
        loop = asyncio.get_running_loop()
        turn: asyncio.Future[bool] = loop.create_future()
        self._turns.append(turn)
        self.queued += 1
        self.waited.inc()
        self.waiting.inc()
        timer = loop.call_later(self.queue_timeout, self._expire, turn)
        try:
            given = await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled() and turn.result():
                self.release()  # handed a slot just as the request was cancelled: pass it on
            raise
        finally:
            self.queued -= 1
            self.waiting.dec()
            timer.cancel()
        if not given:
            self.shed.inc()
        return given

    def release(self) -> None:
        """Give a slot back: to the longest-waiting request, if any."""
        turns = self._turns
        while turns:
            turn = turns.popleft()
            if not turn.done():
                turn.set_result(True)
                return
        self.in_progress -= 1

    def _expire(self, turn: asyncio.Future[bool]) -> None:
        if not turn.done():
            turn.set_result(False)
        # Every wait lasts as long, so turns expire oldest first: the stale ones are at the front.
        turns = self._turns
        while turns and turns[0].done():
            turns.popleft()


class LoadSheddingMiddleware:
    def __init__(self, app: ASGIApp, slots: IngestSlots) -> None:
        self.app = app
        self.slots = slots

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        slots = self.slots
        if (
            not slots.limit
            or scope["type"] != "http"
            or not scope["path"].startswith(INGEST_PREFIX)
            or scope.get(SLOT_HELD)
        ):
            await self.app(scope, receive, send)
            return
        if not await slots.take():
            response = error_response(
                503,
                f"{slots.limit} requests in progress and no slot free in time; "
                "retry after the Retry-After seconds",
                "overloaded",
                retriable=True,
                retry_after=RETRY_AFTER_SECONDS,
            )
            await response(scope, receive, send)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            slots.release()
