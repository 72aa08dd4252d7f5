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
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from app.publishing.errors import DeliveryError, QueueFullError

logger = logging.getLogger(__name__)

# Delivery errors after which this producer instance will never deliver again (shared/BROKER.md:
# after a stalled broker, every delivery of an idempotent producer fails with PRODUCER_FENCED).
PRODUCER_DEAD_CODES = frozenset(
    {
        KafkaError._FATAL,
        KafkaError._FENCED,
        KafkaError.PRODUCER_FENCED,
        KafkaError.UNKNOWN_PRODUCER_ID,
        KafkaError.INVALID_PRODUCER_EPOCH,
        KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER,
    }
)
ERROR_LOG_INTERVAL = 10.0  # seconds between two log lines for the same kind of client error

Headers = Sequence[tuple[str, str | bytes | None]]


@dataclass(frozen=True, slots=True)
class DeliveryReport:
    """Where Kafka stored a record, and how long the acknowledgement took."""

    topic: str
    partition: int
    offset: int
    latency_seconds: float


class AsyncProducer:
    """One librdkafka producer shared by every request of a worker process.

    A fatal producer error (e.g. PRODUCER_FENCED or UNKNOWN_PRODUCER_ID after a stalled or
    restarted broker, see shared/BROKER.md) leaves the librdkafka instance unusable for good, so
    it is replaced by a new one; the records it still held fail as an outage.
    """

    __slots__ = (
        "_config",
        "_last_logged",
        "_loop",
        "_on_replaced",
        "_poll_thread",
        "_producer",
        "_replacing",
        "_reports",
        "_running",
        "_settle_scheduled",
        "replacements",
    )

    def __init__(self, config: dict[str, Any], on_replaced: Callable[[str], None] | None = None) -> None:
        self._config = dict(config)
        self._config.setdefault("error_cb", self._on_client_error)
        # librdkafka's own log lines go through Python logging instead of raw stderr.
        self._config.setdefault("logger", logging.getLogger("librdkafka"))
        self._producer: Producer | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._poll_thread: threading.Thread | None = None
        self._running = threading.Event()
        self._replacing = False
        self._on_replaced = on_replaced
        self.replacements = 0
        self._last_logged: dict[str, float] = {}
        # Delivery reports travel from librdkafka's callback threads to the loop through this deque.
        self._reports: deque[tuple[asyncio.Future[DeliveryReport], DeliveryReport | DeliveryError]] = deque()
        self._settle_scheduled = False

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._producer = Producer(self._config)
        self._running.set()
        self._poll_thread = threading.Thread(target=self._poll_forever, name="kafka-poll", daemon=True)
        self._poll_thread.start()

    def _poll_forever(self) -> None:
        while self._running.is_set():
            producer = self._producer  # re-read: a fatal error swaps in a new producer
            if producer is None:
                return
            try:
                producer.poll(0.05)
            except KafkaException as exc:
                self._fatal(str(exc.args[0]))

    def _on_client_error(self, error: KafkaError) -> None:
        # Connection trouble is reported here as well as through failed deliveries; the
        # deliveries decide what the client is told, this only leaves a trace in the log.
        if error.fatal():
            self._fatal(error.str())
            return
        # One line per kind of error per interval: a dead broker reports itself many times a second.
        now = time.monotonic()
        if now - self._last_logged.get(error.name(), -1e9) >= ERROR_LOG_INTERVAL:
            self._last_logged[error.name()] = now
            logger.warning("kafka client error", extra={"kafka_error": error.name(), "reason": error.str()})

    def _fatal(self, reason: str) -> None:
        """Any thread: ask the loop to replace the producer (once per fatal error)."""
        loop = self._loop
        if loop is not None and not self._replacing and self._running.is_set():
            self._replacing = True
            loop.call_soon_threadsafe(self._replace_producer, reason)

    def _replace_producer(self, reason: str) -> None:
        old = self._producer
        if old is None or not self._running.is_set():
            return
        self._producer = Producer(self._config)
        self.replacements += 1
        self._replacing = False
        logger.error("fatal producer error: replaced the producer", extra={"reason": reason})
        if self._on_replaced is not None:
            self._on_replaced(reason)
        # Fail the old instance's records (their callbacks settle the waiting requests) off the loop.
        threading.Thread(target=_drain, args=(old,), name="kafka-drain", daemon=True).start()

    def _settle_reports(self) -> None:
        """On the loop: resolve every waiting future whose delivery report has come in."""
        self._settle_scheduled = False  # before draining, so a report appended meanwhile schedules again
        reports = self._reports
        while reports:
            future, outcome = reports.popleft()
            _settle(future, outcome)

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
                if error.fatal() or error.code() in PRODUCER_DEAD_CODES:
                    self._fatal(error.str())
                outcome: DeliveryReport | DeliveryError = DeliveryError.from_kafka(topic, error)
            else:
                outcome = DeliveryReport(
                    topic=topic,
                    partition=message.partition() or 0,
                    offset=message.offset() or 0,
                    latency_seconds=time.perf_counter() - started,
                )
            self._reports.append((future, outcome))
            if not self._settle_scheduled:
                # One loop wake-up per burst of reports, not one per record.
                self._settle_scheduled = True
                loop.call_soon_threadsafe(self._settle_reports)

        try:
            producer.produce(topic, value=value, key=key, headers=list(headers), on_delivery=on_delivery)
        except BufferError as exc:
            raise QueueFullError(str(exc)) from None
        except KafkaException as exc:
            # Raised at enqueue time for records that can never succeed (e.g. MSG_SIZE_TOO_LARGE),
            # or, after a fatal error, for every record until the producer is replaced.
            error: KafkaError = exc.args[0]
            if error.fatal() or error.code() == KafkaError._FATAL:
                self._fatal(error.str())
            raise DeliveryError.from_kafka(topic, error) from None
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

    async def flush(self, seconds: float) -> int:
        """Wait (bounded) until queued records are acknowledged; returns how many are still queued."""
        producer = self._producer
        if producer is None:
            return 0
        return int(await asyncio.to_thread(producer.flush, seconds))

    def purge(self) -> None:
        """Fail every queued record now (their requests see an outage and spool them)."""
        if self._producer is not None:
            self._producer.purge(in_queue=True, in_flight=False, blocking=False)

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


def _drain(producer: Producer) -> None:
    try:
        producer.purge(in_queue=True, in_flight=True, blocking=False)
        producer.flush(5)
    except Exception as exc:  # a dead producer may fail in any way; its records settle regardless
        # (librdkafka wraps a fatal error raised during flush's callbacks in a SystemError)
        logger.warning("draining a failed producer", extra={"reason": str(exc)})


def _settle(future: asyncio.Future[DeliveryReport], outcome: DeliveryReport | DeliveryError) -> None:
    if future.done():  # the waiter was cancelled (client went away); nothing to tell
        return
    if isinstance(outcome, DeliveryError):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)


def delivery_error(topic: str, future: asyncio.Future[DeliveryReport] | None) -> DeliveryError | None:
    """The error of a settled delivery future (None when acknowledged); unsent and timed-out count as outages."""
    if future is None:
        return DeliveryError(topic, -1, "NOT_SENT", "record was not sent", True)
    if future.cancelled():
        return DeliveryError(topic, -1, "ACK_TIMEOUT", "no delivery report in time", True)
    error = future.exception()
    if error is None:
        return None
    if isinstance(error, DeliveryError):
        return error
    return DeliveryError(topic, -1, type(error).__name__, str(error), True)
