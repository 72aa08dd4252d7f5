"""confluent-kafka's classic Producer made usable from asyncio.

`produce()` runs on the event loop (it only enqueues); a background thread calls `poll()` so that
delivery callbacks fire, and each callback resolves an asyncio future through
`loop.call_soon_threadsafe`. The loop never blocks on Kafka. (Pattern from faststream's confluent
client; see shared/STYLE.md for why not `AIOProducer`.)
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from app.publishing.errors import DeliveryError, QueueFullError

logger = logging.getLogger(__name__)

Headers = list[tuple[str, str | bytes | None]]


@dataclass(frozen=True, slots=True)
class DeliveryReport:
    """Where Kafka stored a record, and how long the acknowledgement took."""

    topic: str
    partition: int
    offset: int
    latency_seconds: float


class AsyncProducer:
    """One librdkafka producer shared by every request of a worker process."""

    __slots__ = ("_config", "_loop", "_poll_thread", "_producer", "_running")

    def __init__(self, config: dict[str, Any]) -> None:
        self._config = dict(config)
        self._config.setdefault("error_cb", self._on_client_error)
        self._producer: Producer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._poll_thread: threading.Thread | None = None
        self._running = threading.Event()

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._producer = Producer(self._config)
        self._running.set()
        self._poll_thread = threading.Thread(target=self._poll_forever, name="kafka-poll", daemon=True)
        self._poll_thread.start()

    def _poll_forever(self) -> None:
        producer = self._producer
        assert producer is not None
        while self._running.is_set():
            producer.poll(0.05)

    @staticmethod
    def _on_client_error(error: KafkaError) -> None:
        # Connection trouble is reported here as well as through failed deliveries; the
        # deliveries decide what the client is told, this only leaves a trace in the log.
        logger.warning("kafka client error", extra={"kafka_error": error.name(), "reason": error.str()})

    def produce(
        self, topic: str, value: bytes, key: bytes | None, headers: Headers
    ) -> asyncio.Future[DeliveryReport]:
        """Enqueue one record; the future resolves when Kafka acknowledges it or gives up.

        Raises QueueFullError when the bounded queue is full (the caller answers 429).
        """
        producer, loop = self._producer, self._loop
        if producer is None or loop is None:
            raise RuntimeError("producer not started")
        future: asyncio.Future[DeliveryReport] = loop.create_future()
        started = time.perf_counter()

        def on_delivery(error: KafkaError | None, message: Message) -> None:
            # Runs on the poll thread: hand the outcome to the loop, never touch the future here.
            if error is not None:
                outcome: DeliveryReport | DeliveryError = DeliveryError.from_kafka(topic, error)
            else:
                outcome = DeliveryReport(
                    topic=topic,
                    partition=message.partition() or 0,
                    offset=message.offset() or 0,
                    latency_seconds=time.perf_counter() - started,
                )
            loop.call_soon_threadsafe(_settle, future, outcome)

        try:
            producer.produce(topic, value=value, key=key, headers=headers, on_delivery=on_delivery)
        except BufferError as exc:
            raise QueueFullError(str(exc)) from None
        except KafkaException as exc:
            # Raised at enqueue time for records that can never succeed (e.g. MSG_SIZE_TOO_LARGE).
            raise DeliveryError.from_kafka(topic, exc.args[0]) from None
        return future

    def queue_length(self) -> int:
        return len(self._producer) if self._producer is not None else 0

    def cluster_reachable(self, timeout: float) -> bool:
        """Blocking metadata request; call it through `asyncio.to_thread`."""
        if self._producer is None:
            return False
        try:
            self._producer.list_topics(timeout=timeout)
        except KafkaException:
            return False
        return True

    async def close(self, flush_seconds: float) -> int:
        """Flush what is queued (bounded by `flush_seconds`), stop polling; returns records left unsent."""
        producer = self._producer
        if producer is None:
            return 0
        remaining = int(await asyncio.to_thread(producer.flush, flush_seconds))
        self._running.clear()
        if self._poll_thread is not None:
            await asyncio.to_thread(self._poll_thread.join, 5)
        self._producer = None
        return remaining


def _settle(future: asyncio.Future[DeliveryReport], outcome: DeliveryReport | DeliveryError) -> None:
    if future.done():  # the waiter was cancelled (client went away); nothing to tell
        return
    if isinstance(outcome, DeliveryError):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)
