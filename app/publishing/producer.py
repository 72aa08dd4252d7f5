"""confluent-kafka's classic Producer made usable from asyncio.

`send()` runs on the event loop (it only enqueues); a background thread calls `poll()` so that
delivery callbacks fire; the last report of a `send()` wakes its coroutine through
`loop.call_soon_threadsafe`, once per request rather than once per record. The loop never
blocks on Kafka. (Pattern from faststream's confluent
client, rather than confluent-kafka's experimental `AIOProducer`.)
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from app.publishing.errors import PRODUCER_DEAD_CODES, DeliveryError, QueueFullError

logger = logging.getLogger(__name__)

# A record that timed out while the cluster answers means a wedged producer (after a paused or
# restarted broker an idempotent producer can stay stuck on its old requests): see OutageRecovery.
TIMEOUT_CODES = frozenset({KafkaError._MSG_TIMED_OUT, KafkaError._TIMED_OUT, KafkaError.REQUEST_TIMED_OUT})
ERROR_LOG_INTERVAL = 10.0  # seconds between two log lines for the same kind of client error
# How long an eager send's flush lasts: long enough for librdkafka's broker threads, woken at its
# start, to see it and send (a flush of 0 ends before they wake), short enough to end long before
# the acknowledgement (the flush would otherwise wait for it, holding linger.ms off meanwhile).
EAGER_FLUSH_SECONDS = 0.001
EAGER_WAIT_SECONDS = 0.25  # how often the eager-send thread checks that the producer still runs
# Client errors that mean a broker connection failed (a broker down, killed or unreachable).
BROKER_FAILURE_CODES = frozenset({KafkaError._TRANSPORT, KafkaError._ALL_BROKERS_DOWN})

Headers = list[tuple[str, str]]


class Delivery:
    """The delivery reports of records sent together, and one loop wake-up when the last arrives.

    `outcomes[i]` is the acknowledgement latency in seconds of record i, its DeliveryError or
    QueueFullError, or None while no report has come in (after `wait`: not acknowledged in time).
    Reports are written by librdkafka's callbacks on the poll thread; the request's coroutine
    awaits one future for all of them, not one per record.
    """

    __slots__ = (
        "_count",
        "_done",
        "_loop",
        "_on_complete",
        "_on_fatal",
        "_on_timeout",
        "_reported",
        "outcomes",
        "topics",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        topics: list[str],
        on_complete: Callable[[asyncio.Future[None]], None],
        on_fatal: Callable[[str], None],
        on_timeout: Callable[[], None] = lambda: None,
    ) -> None:
        self._loop = loop
        self._on_complete = on_complete
        self._on_fatal = on_fatal
        self._on_timeout = on_timeout
        self.topics = topics
        self.outcomes: list[float | DeliveryError | QueueFullError | None] = [None] * len(topics)
        self._count = len(topics)
        # next() on an itertools.count is atomic under the GIL: reports may come from two threads
        # (the poll thread, and a flush at shutdown).
        self._reported = itertools.count(1)
        self._done: asyncio.Future[None] = loop.create_future()
        if not topics:
            self._done.set_result(None)

    def settle(self, index: int, outcome: float | DeliveryError | QueueFullError) -> None:
        """Any thread: keep the outcome; the last one wakes the waiting coroutine."""
        self.outcomes[index] = outcome
        if next(self._reported) == self._count:
            self._on_complete(self._done)

    def on_delivery(self, index: int, error: KafkaError | None, message: Message) -> None:
        """librdkafka's delivery callback (bound to a record's index with functools.partial)."""
        if error is None:  # settle(), inlined: this runs for every record, holding the GIL
            latency = message.latency()
            self.outcomes[index] = latency if latency is not None else 0.0
            if next(self._reported) == self._count:
                self._on_complete(self._done)
            return
        if error.fatal() or error.code() in PRODUCER_DEAD_CODES:
            self._on_fatal(error.str())
        elif error.code() in TIMEOUT_CODES:
            self._on_timeout()
        self.settle(index, DeliveryError.from_kafka(self.topics[index], error))

    async def wait(self, seconds: float, *, final: bool = True) -> bool:
        """Until every record has a report, or `seconds` have passed; True when all have one.

        After a `final` wait, records still without one count as timed out (as much a timeout
        as librdkafka's own); a caller may wait in steps with `final=False` first.
        """
        if not self._done.done():
            woken: asyncio.Future[None] = self._loop.create_future()

            def wake(_: asyncio.Future[None]) -> None:
                _set_done(woken)

            self._done.add_done_callback(wake)
            timer = self._loop.call_later(max(0.0, seconds), _set_done, woken)
            try:
                await woken
            finally:
                timer.cancel()
                self._done.remove_done_callback(wake)
        complete = None not in self.outcomes
        if final and not complete:
            self._on_timeout()
        return complete

    def error(self, index: int) -> DeliveryError | QueueFullError | None:
        """None when record `index` was acknowledged; its error otherwise (a missing report is a timeout)."""
        outcome = self.outcomes[index]
        if outcome is None:
            return DeliveryError(self.topics[index], -1, "ACK_TIMEOUT", "no delivery report in time", True)
        if isinstance(outcome, float):
            return None
        return outcome

    def latency(self, index: int) -> float:
        outcome = self.outcomes[index]
        return outcome if isinstance(outcome, float) else 0.0


def _set_done(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class AsyncProducer:
    """One librdkafka producer shared by every request of a worker process.

    A fatal producer error (e.g. PRODUCER_FENCED or UNKNOWN_PRODUCER_ID after a stalled or
    restarted broker, see docs/brokers.md) leaves the librdkafka instance unusable for good, so
    it is replaced by a new one; the records it still held fail as an outage.
    """

    __slots__ = (
        "_completed",
        "_config",
        "_eager_below",
        "_eager_thread",
        "_eager_wanted",
        "_last_logged",
        "_loop",
        "_on_replaced",
        "_poll_thread",
        "_producer",
        "_replacing",
        "_running",
        "_wake_scheduled",
        "all_brokers_down",
        "broker_failed_at",
        "replacements",
        "timed_out",
    )

    def __init__(
        self,
        config: dict[str, Any],
        on_replaced: Callable[[str], None] | None = None,
        eager_below: int = 0,
    ) -> None:
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
        # Completed deliveries travel from librdkafka's callback threads to the loop through this
        # deque, with one loop wake-up per burst of them rather than one per request.
        self._completed: deque[asyncio.Future[None]] = deque()
        self._wake_scheduled = False
        # Set (from any thread) when a record of the current instance timed out; OutageRecovery
        # waits on it. Cleared when the instance is replaced.
        self.timed_out = asyncio.Event()
        # Set (from librdkafka's error callback) when no broker connection is up; OutageRecovery
        # checks it with a probe of its own (an idle disconnect reports the same) and clears it.
        self.all_brokers_down = asyncio.Event()
        # time.monotonic() of the last failed broker connection (written by librdkafka's thread).
        self.broker_failed_at = -1e9
        # A send that finds the producer holding at most this many records (queued or awaiting their
        # acknowledgement) goes out at once rather than wait out linger.ms: see _send_eagerly.
        self._eager_below = eager_below
        self._eager_wanted = threading.Event()
        self._eager_thread: threading.Thread | None = None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._producer = Producer(self._config)
        self._running.set()
        self._poll_thread = threading.Thread(target=self._poll_forever, name="kafka-poll", daemon=True)
        self._poll_thread.start()
        if self._eager_below > 0:
            self._eager_thread = threading.Thread(target=self._send_eagerly, name="kafka-eager", daemon=True)
            self._eager_thread.start()

    def _poll_forever(self) -> None:
        while self._running.is_set():
            producer = self._producer  # re-read: a fatal error swaps in a new producer
            if producer is None:
                return
            try:
                producer.poll(0.05)
            except KafkaException as exc:
                self._fatal(str(exc.args[0]))

    def _send_eagerly(self) -> None:
        """Thread: have librdkafka send what it holds now, on request from `send`.

        linger.ms lets the records of concurrent requests share batches (fewer, fuller produce
        requests: less CPU in the broker and here), but an event arriving at a quiet moment waits it
        out alone. While a flush runs, librdkafka ignores linger.ms and wakes its broker threads at
        the flush's start; a flush of a millisecond is enough for them to take the records, so
        this thread (not the loop) spends that millisecond. Its delivery callbacks are the poll
        thread's, served from here as well.
        """
        wanted = self._eager_wanted
        while self._running.is_set():
            if not wanted.wait(EAGER_WAIT_SECONDS):
                continue
            wanted.clear()
            producer = self._producer
            if producer is None:
                return
            try:
                producer.flush(EAGER_FLUSH_SECONDS)
            except KafkaException as exc:
                self._fatal(str(exc.args[0]))

    def _on_client_error(self, error: KafkaError) -> None:
        # Connection trouble is reported here as well as through failed deliveries; the
        # deliveries decide what the client is told, this only leaves a trace in the log.
        if error.fatal():
            self._fatal(error.str())
            return
        if error.code() in BROKER_FAILURE_CODES:
            self.broker_failed_at = time.monotonic()
        loop = self._loop
        if error.code() == KafkaError._ALL_BROKERS_DOWN and loop is not None and self._running.is_set():
            loop.call_soon_threadsafe(self.all_brokers_down.set)
        # One line per kind of error per interval: a dead broker reports itself many times a second.
        now = time.monotonic()
        if now - self._last_logged.get(error.name(), -1e9) >= ERROR_LOG_INTERVAL:
            self._last_logged[error.name()] = now
            logger.warning("kafka client error", extra={"kafka_error": error.name(), "reason": error.str()})

    def _timeout(self) -> None:
        """Any thread: a record of this instance timed out."""
        loop = self._loop
        if loop is not None and not self.timed_out.is_set() and self._running.is_set():
            loop.call_soon_threadsafe(self.timed_out.set)

    def replace(self, reason: str) -> None:
        """On the loop: start over with a new librdkafka instance; the old one's records fail as
        an outage (their callers spool or retry them, with the same event ids)."""
        if not self._replacing:
            self._replacing = True
            self._replace_producer(reason)

    def _fatal(self, reason: str) -> None:
        """Any thread: ask the loop to replace the producer (once per fatal error)."""
        loop = self._loop
        if loop is not None and not self._replacing and self._running.is_set():
            self._replacing = True
            loop.call_soon_threadsafe(self._replace_producer, f"fatal producer error: {reason}")

    def _replace_producer(self, reason: str) -> None:
        old = self._producer
        if old is None or not self._running.is_set():
            return
        self._producer = Producer(self._config)
        self.replacements += 1
        self._replacing = False
        self.timed_out.clear()
        self.all_brokers_down.clear()
        logger.error("producer replaced", extra={"reason": reason})
        if self._on_replaced is not None:
            self._on_replaced(reason)
        # Fail the old instance's records (their callbacks settle the waiting requests) off the loop.
        threading.Thread(target=_drain, args=(old,), name="kafka-drain", daemon=True).start()

    def _complete(self, done: asyncio.Future[None]) -> None:
        """Any thread: a delivery has all its reports; wake the loop unless a wake-up is pending."""
        self._completed.append(done)
        if not self._wake_scheduled and self._loop is not None:
            self._wake_scheduled = True
            self._loop.call_soon_threadsafe(self._wake_completed)

    def _wake_completed(self) -> None:
        """On the loop: resolve every completed delivery."""
        self._wake_scheduled = False  # before draining, so one completed meanwhile schedules again
        completed = self._completed
        while completed:
            _set_done(completed.popleft())

    def send(self, records: Sequence[tuple[str, bytes, bytes | None, Headers]]) -> Delivery:
        """Enqueue (topic, value, key, headers) records in order; await the Delivery for their reports.

        Never raises for a record: one Kafka refuses at enqueue time (e.g. MSG_SIZE_TOO_LARGE)
        gets its DeliveryError at once; when the bounded queue is full, that record and every
        later one get a QueueFullError (429), so a request's later events never overtake it.
        """
        producer, loop = self._producer, self._loop
        if producer is None or loop is None:
            raise RuntimeError("producer not started")
        delivery = Delivery(
            loop, [topic for topic, _, _, _ in records], self._complete, self._fatal, self._timeout
        )
        report = delivery.on_delivery
        produce = producer.produce
        # Eager when the producer holds few records besides these (queued, or awaiting their
        # acknowledgement): a quiet moment, or the group of single events of a loop turn arriving
        # after the previous one was answered. Sends that find others waiting (batches and single
        # events under load) wait out linger.ms with them and share produce requests.
        eager = self._eager_below > 0 and len(producer) <= self._eager_below
        for index, (topic, value, key, headers) in enumerate(records):
            try:
                # (The stub wants list[tuple[str, str | bytes | None]]: lists are invariant.)
                produce(topic, value, key, headers=headers, on_delivery=partial(report, index))  # type: ignore[arg-type]
            except BufferError as exc:
                full = QueueFullError(str(exc))
                for rest in range(index, len(records)):
                    delivery.settle(rest, full)
                break
            except KafkaException as exc:
                # Refused at enqueue time for a record that can never succeed (e.g. too large),
                # or, after a fatal error, every record until the producer is replaced.
                error: KafkaError = exc.args[0]
                if error.fatal() or error.code() == KafkaError._FATAL:
                    self._fatal(error.str())
                delivery.settle(index, DeliveryError.from_kafka(topic, error))
        if eager:
            self._eager_wanted.set()
        return delivery

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
        for thread in (self._poll_thread, self._eager_thread):
            if thread is not None:
                await asyncio.to_thread(thread.join, 5)
        self._producer = None
        return remaining


def _drain(producer: Producer) -> None:
    try:
        producer.purge(in_queue=True, in_flight=True, blocking=False)
        producer.flush(5)
    except Exception as exc:  # a dead producer may fail in any way; its records settle regardless
        # (librdkafka wraps a fatal error raised during flush's callbacks in a SystemError)
        logger.warning("draining a failed producer", extra={"reason": str(exc)})
