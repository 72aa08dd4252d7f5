"""`EventClient` (sync) and `AsyncEventClient`: publish events over HTTP with the service's guarantees.

Retries 429, 5xx and connection errors with backoff (honouring Retry-After), never another 4xx.
Every request carries an Idempotency-Key kept across its retries, and every event a client-side
event_id, so a retried request is never published twice. `enqueue` batches in the background;
`flush`/`close` send what is waiting through the batch endpoint.

Time, as a Kafka producer counts it: `timeout` bounds one HTTP request (librdkafka's
`request.timeout.ms`); `delivery_timeout` bounds a whole call, retries included
(`delivery.timeout.ms`); a call's own `timeout=` replaces `delivery_timeout` for that call.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, Self

import httpx
from pydantic import ValidationError

from event_models import BaseEvent
from ingest_client import protocol
from ingest_client.protocol import EventLike, IngestError, PublishResult

logger = logging.getLogger("ingest_client")


class _Settings:
    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        timeout: float,
        delivery_timeout: float,
        retries: int,
        backoff: float,
        max_backoff: float,
        batch_size: int,
        flush_interval: float,
        ack: str | None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout
        self.delivery_timeout = delivery_timeout
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.params = {"ack": ack} if ack else {}

    def deadline(self, timeout: float | None) -> _Deadline:
        return _Deadline(self.delivery_timeout if timeout is None else timeout)


class _Deadline:
    """The time one call has left, retries included."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.ends = time.monotonic() + seconds

    def left(self) -> float:
        return self.ends - time.monotonic()

    def request_timeout(self, per_request: float) -> float:
        return max(0.001, min(per_request, self.left()))

    def passed(self, attempts: int, problem: str) -> IngestError:
        return IngestError(
            f"not delivered within {self.seconds:g} s ({attempts} attempt(s)); last: {problem}"
        )


def _problem(response: httpx.Response | None, error: Exception | None) -> str:
    if response is not None:
        return f"HTTP {response.status_code}"
    return f"{type(error).__name__}: {error}" if error is not None else "no attempt"


def _refused(event: EventLike | str, why: str, details: Any = None) -> bool:
    """`publish_event`'s answer when the event was not taken: False, and the reason in the log."""
    event_id = event.event_id if isinstance(event, BaseEvent) else None
    if isinstance(event, Mapping):
        event_id = event.get("event_id")
    logger.warning("event not published: %s", why, extra={"event_id": str(event_id), "details": details})
    return False


class EventClient:
    """Synchronous client (scripts, Airflow tasks). Use it as a context manager."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8083",
        *,
        api_key: str | None = None,
        timeout: float = 15.0,
        delivery_timeout: float = 120.0,
        retries: int = 5,
        backoff: float = 0.2,
        max_backoff: float = 10.0,
        batch_size: int = 100,
        flush_interval: float = 1.0,
        ack: str | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._s = _Settings(
            base_url,
            api_key,
            timeout,
            delivery_timeout,
            retries,
            backoff,
            max_backoff,
            batch_size,
            flush_interval,
            ack,
        )
        self._http = httpx.Client(base_url=self._s.base_url, timeout=timeout, transport=transport)
        self._buffer: list[Any] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._flusher: threading.Thread | None = None
        self.results: list[PublishResult] = []  # results of enqueued events, filled by flush

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def publish(
        self, event: EventLike | str, fields: Mapping[str, Any] | None = None, *, timeout: float | None = None
    ) -> PublishResult:
        """Publish one event and wait for the answer (`rejected` with the service's reasons when it
        refused the event). Raises IngestError when no answer came within the time allowed, and
        pydantic's ValidationError for an event the models refuse before sending."""
        model = protocol.as_event(event, fields)
        response = self._send(
            protocol.path_for(model),
            protocol.event_body(model),
            protocol.key_for([model]),
            self._s.deadline(timeout),
        )
        return protocol.single_result(response, model)

    def publish_event(
        self, event: EventLike | str, fields: Mapping[str, Any] | None = None, *, timeout: float | None = None
    ) -> bool:
        """True when the service took the event (accepted, spooled, duplicate or unrouted). Never
        raises: an unreachable service, an invalid or refused event is False, and the log says why."""
        try:
            result = self.publish(event, fields, timeout=timeout)
        except ValidationError as exc:
            return _refused(event, "invalid event", exc.errors(include_url=False, include_input=False))
        except TypeError as exc:
            return _refused(event, f"invalid event: {exc}")
        except IngestError as exc:
            return _refused(event, str(exc))
        except Exception as exc:  # the promise is a bool: whatever went wrong is logged, not raised
            return _refused(event, f"{type(exc).__name__}: {exc}")
        return result.ok or _refused(event, f"refused ({result.http_status})", result.errors)

    def publish_many(
        self, events: Sequence[EventLike], *, timeout: float | None = None
    ) -> list[PublishResult]:
        """Publish through the batch endpoint, `batch_size` at a time; one result per event, in order.
        `timeout` bounds the whole call: IngestError when it passes, with nothing sent twice on a retry."""
        models = [protocol.as_event(event) for event in events]
        deadline = self._s.deadline(timeout)
        results: list[PublishResult] = []
        for start in range(0, len(models), self._s.batch_size):
            chunk = models[start : start + self._s.batch_size]
            response = self._send(
                "/v1/events/batch", protocol.batch_body(chunk), protocol.key_for(chunk), deadline
            )
            results += protocol.batch_results(response, chunk)
        return results

    def enqueue(self, event: EventLike) -> None:
        """Queue an event for a background batch (sent every `flush_interval` or `batch_size`)."""
        model = protocol.as_event(event)
        with self._lock:
            self._buffer.append(model)
            full = len(self._buffer) >= self._s.batch_size
        if self._flusher is None:
            self._flusher = threading.Thread(
                target=self._flush_periodically, name="ingest-flush", daemon=True
            )
            self._flusher.start()
        if full:
            self.flush()

    def flush(self, timeout: float | None = None) -> list[PublishResult]:
        """Send what `enqueue` queued and return its results. Events the time allowed (`timeout`, else
        `delivery_timeout`) did not deliver stay queued for the next flush (`pending` counts them); a
        retried batch carries the same Idempotency-Key, so the service publishes it once."""
        deadline = self._s.deadline(timeout)
        results: list[PublishResult] = []
        while True:
            with self._lock:
                chunk, self._buffer = self._buffer[: self._s.batch_size], self._buffer[self._s.batch_size :]
            if not chunk:
                break
            try:
                response = self._send(
                    "/v1/events/batch", protocol.batch_body(chunk), protocol.key_for(chunk), deadline
                )
            except IngestError:
                with self._lock:
                    self._buffer[:0] = chunk
                self.results += results
                raise
            results += protocol.batch_results(response, chunk)
        for result in results:
            if not result.ok:
                logger.warning("event rejected", extra={"event_id": result.event_id, "errors": result.errors})
        self.results += results
        return results

    @property
    def pending(self) -> int:
        """Events queued by `enqueue` and not delivered yet."""
        return len(self._buffer)

    def close(self, timeout: float | None = None) -> None:
        """Flush (within `timeout`, else `delivery_timeout`) and release the connections. Events still
        queued when the time is up are logged as lost, not raised: close runs in `with` exits."""
        self._stop.set()
        try:
            self.flush(timeout)
        except IngestError as exc:
            logger.error("events not delivered at close", extra={"events": self.pending, "reason": str(exc)})
        if self._flusher is not None:
            self._flusher.join(timeout=self._s.flush_interval + 1)
        self._http.close()

    def _flush_periodically(self) -> None:
        while not self._stop.wait(self._s.flush_interval):
            try:
                self.flush()
            except IngestError:
                logger.exception("background flush failed; events kept for the next one")

    def _send(self, path: str, body: bytes, key: str, deadline: _Deadline) -> httpx.Response:
        attempt = 0
        while True:
            attempt += 1
            response: httpx.Response | None = None
            error: Exception | None = None
            try:
                response = self._http.post(
                    path,
                    content=body,
                    headers=protocol.headers(self._s.api_key, key),
                    params=self._s.params,
                    timeout=deadline.request_timeout(self._s.timeout),
                )
            except httpx.TransportError as exc:
                error = exc
                if attempt > self._s.retries:
                    raise IngestError(f"cannot reach {self._s.base_url}: {exc}") from exc
            else:
                if not protocol.should_retry(response) or attempt > self._s.retries:
                    return response
            delay = protocol.backoff(attempt, response, self._s.backoff, self._s.max_backoff)
            if delay >= deadline.left():
                raise deadline.passed(attempt, _problem(response, error))
            logger.info("retrying", extra={"path": path, "attempt": attempt, "delay": round(delay, 3)})
            time.sleep(delay)


class AsyncEventClient:
    """Asyncio client (FastAPI services). Use it with `async with`."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8083",
        *,
        api_key: str | None = None,
        timeout: float = 15.0,
        delivery_timeout: float = 120.0,
        retries: int = 5,
        backoff: float = 0.2,
        max_backoff: float = 10.0,
        batch_size: int = 100,
        flush_interval: float = 1.0,
        ack: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._s = _Settings(
            base_url,
            api_key,
            timeout,
            delivery_timeout,
            retries,
            backoff,
            max_backoff,
            batch_size,
            flush_interval,
            ack,
        )
        self._http = httpx.AsyncClient(base_url=self._s.base_url, timeout=timeout, transport=transport)
        self._buffer: list[Any] = []
        self._flusher: asyncio.Task[None] | None = None
        self.results: list[PublishResult] = []

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def publish(
        self, event: EventLike | str, fields: Mapping[str, Any] | None = None, *, timeout: float | None = None
    ) -> PublishResult:
        """As `EventClient.publish`."""
        model = protocol.as_event(event, fields)
        response = await self._send(
            protocol.path_for(model),
            protocol.event_body(model),
            protocol.key_for([model]),
            self._s.deadline(timeout),
        )
        return protocol.single_result(response, model)

    async def publish_event(
        self, event: EventLike | str, fields: Mapping[str, Any] | None = None, *, timeout: float | None = None
    ) -> bool:
        """As `EventClient.publish_event`: a bool, never an exception; the log says why not."""
        try:
            result = await self.publish(event, fields, timeout=timeout)
        except ValidationError as exc:
            return _refused(event, "invalid event", exc.errors(include_url=False, include_input=False))
        except TypeError as exc:
            return _refused(event, f"invalid event: {exc}")
        except IngestError as exc:
            return _refused(event, str(exc))
        except Exception as exc:  # the promise is a bool: whatever went wrong is logged, not raised
            return _refused(event, f"{type(exc).__name__}: {exc}")
        return result.ok or _refused(event, f"refused ({result.http_status})", result.errors)

    async def publish_many(
        self, events: Sequence[EventLike], *, timeout: float | None = None
    ) -> list[PublishResult]:
        """As `EventClient.publish_many`."""
        models = [protocol.as_event(event) for event in events]
        deadline = self._s.deadline(timeout)
        results: list[PublishResult] = []
        for start in range(0, len(models), self._s.batch_size):
            chunk = models[start : start + self._s.batch_size]
            response = await self._send(
                "/v1/events/batch", protocol.batch_body(chunk), protocol.key_for(chunk), deadline
            )
            results += protocol.batch_results(response, chunk)
        return results

    async def enqueue(self, event: EventLike) -> None:
        self._buffer.append(protocol.as_event(event))
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush_periodically())
        if len(self._buffer) >= self._s.batch_size:
            await self.flush()

    async def flush(self, timeout: float | None = None) -> list[PublishResult]:
        """As `EventClient.flush`: what the time allowed did not deliver stays queued."""
        deadline = self._s.deadline(timeout)
        results: list[PublishResult] = []
        while self._buffer:
            chunk, self._buffer = self._buffer[: self._s.batch_size], self._buffer[self._s.batch_size :]
            try:
                response = await self._send(
                    "/v1/events/batch", protocol.batch_body(chunk), protocol.key_for(chunk), deadline
                )
            except BaseException:  # IngestError, or the caller cancelled us: keep the events
                self._buffer[:0] = chunk
                self.results += results
                raise
            results += protocol.batch_results(response, chunk)
        self.results += results
        return results

    @property
    def pending(self) -> int:
        """Events queued by `enqueue` and not delivered yet."""
        return len(self._buffer)

    async def close(self, timeout: float | None = None) -> None:
        """As `EventClient.close`."""
        if self._flusher is not None:
            self._flusher.cancel()
            await asyncio.gather(self._flusher, return_exceptions=True)
        try:
            await self.flush(timeout)
        except IngestError as exc:
            logger.error("events not delivered at close", extra={"events": self.pending, "reason": str(exc)})
        await self._http.aclose()

    async def _flush_periodically(self) -> None:
        while True:
            await asyncio.sleep(self._s.flush_interval)
            try:
                await self.flush()
            except IngestError:
                logger.exception("background flush failed; events kept for the next one")

    async def _send(self, path: str, body: bytes, key: str, deadline: _Deadline) -> httpx.Response:
        attempt = 0
        while True:
            attempt += 1
            response: httpx.Response | None = None
            error: Exception | None = None
            try:
                response = await self._http.post(
                    path,
                    content=body,
                    headers=protocol.headers(self._s.api_key, key),
                    params=self._s.params,
                    timeout=deadline.request_timeout(self._s.timeout),
                )
            except httpx.TransportError as exc:
                error = exc
                if attempt > self._s.retries:
                    raise IngestError(f"cannot reach {self._s.base_url}: {exc}") from exc
            else:
                if not protocol.should_retry(response) or attempt > self._s.retries:
                    return response
            delay = protocol.backoff(attempt, response, self._s.backoff, self._s.max_backoff)
            if delay >= deadline.left():
                raise deadline.passed(attempt, _problem(response, error))
            logger.info("retrying", extra={"path": path, "attempt": attempt, "delay": round(delay, 3)})
            await asyncio.sleep(delay)
