"""`EventClient` (sync) and `AsyncEventClient`: publish events over HTTP with the service's guarantees.

Retries 429, 5xx and connection errors with backoff (honouring Retry-After), never another 4xx.
Every request carries an Idempotency-Key kept across its retries, and every event a client-side
event_id, so a retried request is never published twice. `enqueue` batches in the background;
`flush`/`close` send what is waiting through the batch endpoint.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Sequence
from types import TracebackType
from typing import Any, Self

import httpx

from ingest_client import protocol
from ingest_client.protocol import EventLike, IngestError, PublishResult

logger = logging.getLogger("ingest_client")


class _Settings:
    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        timeout: float,
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
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.batch_size = batch_size
        self.flush_interval = flush_interval
        self.params = {"ack": ack} if ack else {}


class EventClient:
    """Synchronous client (scripts, Airflow tasks). Use it as a context manager."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8083",
        *,
        api_key: str | None = None,
        timeout: float = 15.0,
        retries: int = 5,
        backoff: float = 0.2,
        max_backoff: float = 10.0,
        batch_size: int = 100,
        flush_interval: float = 1.0,
        ack: str | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._s = _Settings(
            base_url, api_key, timeout, retries, backoff, max_backoff, batch_size, flush_interval, ack
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

    def publish(self, event: EventLike) -> PublishResult:
        """Publish one event and wait for the answer."""
        model = protocol.as_event(event)
        response = self._send(
            protocol.PATHS[model.event_type], protocol.event_body(model), protocol.key_for([model])
        )
        return protocol.single_result(response, model)

    def publish_event(self, event: EventLike) -> bool:
        """True when the service took the event (accepted, spooled, duplicate or unrouted)."""
        return self.publish(event).ok

    def publish_many(self, events: Sequence[EventLike]) -> list[PublishResult]:
        """Publish through the batch endpoint, `batch_size` at a time; one result per event, in order."""
        models = [protocol.as_event(event) for event in events]
        results: list[PublishResult] = []
        for start in range(0, len(models), self._s.batch_size):
            chunk = models[start : start + self._s.batch_size]
            response = self._send("/v1/events/batch", protocol.batch_body(chunk), protocol.key_for(chunk))
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

    def flush(self) -> list[PublishResult]:
        with self._lock:
            waiting, self._buffer = self._buffer, []
        results = self.publish_many(waiting) if waiting else []
        for result in results:
            if not result.ok:
                logger.warning("event rejected", extra={"event_id": result.event_id, "errors": result.errors})
        self.results += results
        return results

    def close(self) -> None:
        self._stop.set()
        self.flush()
        if self._flusher is not None:
            self._flusher.join(timeout=self._s.flush_interval + 1)
        self._http.close()

    def _flush_periodically(self) -> None:
        while not self._stop.wait(self._s.flush_interval):
            try:
                self.flush()
            except IngestError:
                logger.exception("background flush failed; events kept for the next one")

    def _send(self, path: str, body: bytes, key: str) -> httpx.Response:
        attempt = 0
        while True:
            attempt += 1
            response: httpx.Response | None = None
            try:
                response = self._http.post(
                    path, content=body, headers=protocol.headers(self._s.api_key, key), params=self._s.params
                )
            except httpx.TransportError as exc:
                if attempt > self._s.retries:
                    raise IngestError(f"cannot reach {self._s.base_url}: {exc}") from exc
            else:
                if not protocol.should_retry(response) or attempt > self._s.retries:
                    return response
            delay = protocol.backoff(attempt, response, self._s.backoff, self._s.max_backoff)
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
        retries: int = 5,
        backoff: float = 0.2,
        max_backoff: float = 10.0,
        batch_size: int = 100,
        flush_interval: float = 1.0,
        ack: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._s = _Settings(
            base_url, api_key, timeout, retries, backoff, max_backoff, batch_size, flush_interval, ack
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

    async def publish(self, event: EventLike) -> PublishResult:
        model = protocol.as_event(event)
        response = await self._send(
            protocol.PATHS[model.event_type], protocol.event_body(model), protocol.key_for([model])
        )
        return protocol.single_result(response, model)

    async def publish_event(self, event: EventLike) -> bool:
        return (await self.publish(event)).ok

    async def publish_many(self, events: Sequence[EventLike]) -> list[PublishResult]:
        models = [protocol.as_event(event) for event in events]
        results: list[PublishResult] = []
        for start in range(0, len(models), self._s.batch_size):
            chunk = models[start : start + self._s.batch_size]
            response = await self._send(
                "/v1/events/batch", protocol.batch_body(chunk), protocol.key_for(chunk)
            )
            results += protocol.batch_results(response, chunk)
        return results

    async def enqueue(self, event: EventLike) -> None:
        self._buffer.append(protocol.as_event(event))
        if self._flusher is None:
            self._flusher = asyncio.create_task(self._flush_periodically())
        if len(self._buffer) >= self._s.batch_size:
            await self.flush()

    async def flush(self) -> list[PublishResult]:
        waiting, self._buffer = self._buffer, []
        results = await self.publish_many(waiting) if waiting else []
        self.results += results
        return results

    async def close(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            await asyncio.gather(self._flusher, return_exceptions=True)
        await self.flush()
        await self._http.aclose()

    async def _flush_periodically(self) -> None:
        while True:
            await asyncio.sleep(self._s.flush_interval)
            try:
                await self.flush()
            except IngestError:
                logger.exception("background flush failed; events kept for the next one")

    async def _send(self, path: str, body: bytes, key: str) -> httpx.Response:
        attempt = 0
        while True:
            attempt += 1
            response: httpx.Response | None = None
            try:
                response = await self._http.post(
                    path, content=body, headers=protocol.headers(self._s.api_key, key), params=self._s.params
                )
            except httpx.TransportError as exc:
                if attempt > self._s.retries:
                    raise IngestError(f"cannot reach {self._s.base_url}: {exc}") from exc
            else:
                if not protocol.should_retry(response) or attempt > self._s.retries:
                    return response
            delay = protocol.backoff(attempt, response, self._s.backoff, self._s.max_backoff)
            logger.info("retrying", extra={"path": path, "attempt": attempt, "delay": round(delay, 3)})
            await asyncio.sleep(delay)
