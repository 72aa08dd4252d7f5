"""The dead-letter topic from the operator's side: peek at recent records, replay them.

A replay consumes the DLQ with its own consumer group (one per filter, so different filters keep
their own progress), republishes each matching record to its `original_topic` with its original
key, value and headers, and commits offsets only after Kafka acknowledged the records before them.
A replay killed midway and started again repeats at most the unacknowledged window, never skips.

Synchronous: the admin routes run these in a worker thread.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from pydantic import BaseModel, ConfigDict, Field

from app.publishing.topic_admin import KafkaAdmin

DLQ_HEADERS = frozenset({"dlq_reason", "dlq_timestamp", "original_topic", "dlq_attempts"})


class ReplayFilter(BaseModel):
    """Which dead-lettered records to replay; every given condition must hold."""

    model_config = ConfigDict(extra="forbid")

    reason: str | None = Field(
        None, max_length=200, description="Substring of `dlq_reason` (case-insensitive)."
    )
    event_type: str | None = Field(None, max_length=128)
    original_topic: str | None = Field(None, max_length=249)
    since: datetime | None = Field(None, description="Dead-lettered at or after (RFC 3339).")
    until: datetime | None = Field(None, description="Dead-lettered before (RFC 3339).")

    def group_suffix(self) -> str:
        """A stable name for this filter, so each filter keeps its own replay progress."""
        return hashlib.sha1(self.model_dump_json().encode()).hexdigest()[:10]

    def matches(self, record: DeadLetter) -> bool:
        if self.reason and self.reason.lower() not in record.reason.lower():
            return False
        if self.event_type and record.headers.get("event_type") != self.event_type:
            return False
        if self.original_topic and record.original_topic != self.original_topic:
            return False
        stamp = record.dead_lettered_at
        if (self.since or self.until) and stamp is None:
            return False
        if self.since and stamp is not None and stamp < self.since:
            return False
        return not (self.until and stamp is not None and stamp >= self.until)


@dataclass
class DeadLetter:
    """One record of the dead-letter topic, with its DLQ headers read out."""

    partition: int
    offset: int
    key: bytes | None
    value: bytes
    headers: dict[str, str]
    raw_headers: list[tuple[str, bytes]]

    @property
    def reason(self) -> str:
        return self.headers.get("dlq_reason", "")

    @property
    def original_topic(self) -> str:
        return self.headers.get("original_topic", "")

    @property
    def dead_lettered_at(self) -> datetime | None:
        text = self.headers.get("dlq_timestamp")
        try:
            return datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None
        except ValueError:
            return None

    def summary(self) -> dict[str, Any]:
        try:
            value: Any = orjson.loads(self.value)
        except orjson.JSONDecodeError:
            value = f"<{len(self.value)} bytes>"
        return {
            "partition": self.partition,
            "offset": self.offset,
            "event_id": self.headers.get("event_id"),
            "event_type": self.headers.get("event_type"),
            "original_topic": self.original_topic,
            "dlq_reason": self.reason,
            "dlq_timestamp": self.headers.get("dlq_timestamp"),
            "dlq_attempts": self.headers.get("dlq_attempts"),
            "key": self.key.decode(errors="replace") if self.key is not None else None,
            "value": value,
        }

    @classmethod
    def from_message(cls, message: Message) -> DeadLetter:
        headers = message.headers() or []
        pairs = list(headers.items()) if isinstance(headers, dict) else list(headers)
        raw = [(name, item or b"") for name, item in pairs]
        value = message.value()
        key = message.key()
        return cls(
            partition=message.partition() or 0,
            offset=message.offset() or 0,
            key=key.encode() if isinstance(key, str) else key,
            value=value.encode() if isinstance(value, str) else value or b"",
            headers={
                name: (item.decode(errors="replace") if isinstance(item, bytes) else str(item))
                for name, item in raw
            },
            raw_headers=[
                (name, item if isinstance(item, bytes) else str(item).encode()) for name, item in raw
            ],
        )


# The group coordinator is not ready yet (a new cluster, a moved coordinator): ask again.
_COORDINATOR_NOT_READY = frozenset(
    {
        KafkaError.NOT_COORDINATOR,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
    }
)


def _committed(consumer: Consumer, partitions: list[TopicPartition], seconds: float) -> list[TopicPartition]:
    """The group's committed offsets, asking again while its coordinator is not ready (librdkafka
    answers NOT_COORDINATOR at once rather than waiting for it)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return list(consumer.committed(partitions, timeout=max(0.1, deadline - time.monotonic())))
        except KafkaException as exc:
            error = exc.args[0]
            if error.code() not in _COORDINATOR_NOT_READY or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _header(message: Message, name: str) -> bytes:
    headers = message.headers() or []
    for key, value in headers.items() if isinstance(headers, dict) else headers:
        if key == name:
            return value if isinstance(value, bytes) else str(value or "").encode()
    return b""


@dataclass
class ReplayReport:
    """What a replay did."""

    group: str
    dry_run: bool
    scanned: int = 0
    matched: int = 0
    replayed: int = 0
    complete: bool = False
    error: str | None = None
    by_reason: dict[str, int] = field(default_factory=dict)


class DeadLetters:
    """Peek and replay on one DLQ topic."""

    def __init__(
        self, admin: KafkaAdmin, producer_config: dict[str, Any], dlq_topic: str, group_prefix: str
    ) -> None:
        self.admin = admin
        self.producer_config = producer_config
        self.topic = dlq_topic
        self.group_prefix = group_prefix

    def _consumer(self, group: str) -> Consumer:
        return Consumer(
            {
                **self.admin.connection,
                "logger": logging.getLogger("librdkafka"),
                "group.id": group,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "session.timeout.ms": 6000,
                "fetch.wait.max.ms": 50,
            }
        )

    def _partitions(self) -> list[int]:
        metadata = self.admin.client.list_topics(timeout=self.admin.timeout).topics.get(self.topic)
        return sorted(metadata.partitions) if metadata is not None and metadata.error is None else []

    def peek(self, limit: int, seconds: float = 10.0) -> list[dict[str, Any]]:
        """The newest `limit` records of each partition, newest first overall (bounded in time)."""
        partitions = self._partitions()
        if not partitions:
            return []
        marks = self.admin.offsets(self.topic, partitions)
        consumer = self._consumer(f"{self.group_prefix}-peek")
        # Newest first by the time each was dead-lettered: sorted on that one header, and only the
        # `limit` kept are read out in full (a page asks for hundreds out of thousands).
        found: list[tuple[bytes, int, Message]] = []
        try:
            consumer.assign(
                [TopicPartition(self.topic, p, max(lo, hi - limit)) for p, (lo, hi) in marks.items()]
            )
            remaining = {p for p, (lo, hi) in marks.items() if hi > lo}
            deadline = time.monotonic() + seconds
            while remaining and time.monotonic() < deadline:
                for message in consumer.consume(limit, 0.2):
                    if message.error() is not None:
                        continue
                    offset = message.offset() or 0
                    found.append((_header(message, "dlq_timestamp"), offset, message))
                    if offset + 1 >= marks[message.partition() or 0][1]:
                        remaining.discard(message.partition() or 0)
        finally:
            consumer.close()
        found.sort(key=lambda item: item[:2], reverse=True)
        return [DeadLetter.from_message(message).summary() for _, _, message in found[:limit]]

    def replay(
        self,
        wanted: ReplayFilter,
        dry_run: bool,
        max_records: int,
        window: int,
        seconds: float,
        group: str | None,
    ) -> ReplayReport:
        """Republish matching records to their original topics, committing behind the acknowledgements."""
        group = group or f"{self.group_prefix}-{wanted.group_suffix()}"
        report = ReplayReport(group=group, dry_run=dry_run)
        partitions = self._partitions()
        if not partitions:
            report.complete = True
            return report
        marks = self.admin.offsets(self.topic, partitions)
        ends = {p: hi for p, (_, hi) in marks.items()}
        consumer = self._consumer(group)
        producer = (
            None if dry_run else Producer({**self.producer_config, "enable.idempotence": True, "acks": "all"})
        )
        failures: list[str] = []

        def on_delivery(error: KafkaError | None, _message: Message) -> None:
            if error is not None:
                failures.append(error.str())

        try:
            committed = _committed(consumer, [TopicPartition(self.topic, p) for p in partitions], seconds=10)
            # A group's first replay starts at each partition's low mark as an absolute offset (a
            # logical "beginning" would wait for librdkafka's 500 ms offset-resolution retry).
            starts = {
                tp.partition: (tp.offset if tp.offset >= 0 else marks[tp.partition][0]) for tp in committed
            }
            pending = {p for p in partitions if starts[p] < ends[p]}
            consumer.assign([TopicPartition(self.topic, p, starts[p]) for p in partitions])
            window_next: dict[int, int] = {}  # partition -> offset to commit once the window is acknowledged
            in_window = 0
            deadline = time.monotonic() + seconds
            while pending and report.scanned < max_records and time.monotonic() < deadline:
                message = consumer.poll(0.2)
                if message is None:
                    continue
                if message.error() is not None:
                    continue
                record = DeadLetter.from_message(message)
                if record.offset >= ends[record.partition]:  # past the snapshot taken at the start
                    pending.discard(record.partition)
                    continue
                report.scanned += 1
                if wanted.matches(record):
                    report.matched += 1
                    report.by_reason[record.reason[:80]] = report.by_reason.get(record.reason[:80], 0) + 1
                    if producer is not None:
                        headers: list[tuple[str, str | bytes | None]] = [
                            (name, value) for name, value in record.raw_headers if name not in DLQ_HEADERS
                        ]
                        producer.produce(
                            record.original_topic,
                            value=record.value,
                            key=record.key,
                            headers=headers,
                            on_delivery=on_delivery,
                        )
                        in_window += 1
                window_next[record.partition] = record.offset + 1
                if record.offset + 1 >= ends[record.partition]:
                    pending.discard(record.partition)
                if producer is not None and (in_window >= window or not pending):
                    if not self._acknowledge_and_commit(producer, consumer, window_next, report, failures):
                        return report
                    report.replayed += in_window
                    in_window = 0
            if producer is not None and window_next:
                if not self._acknowledge_and_commit(producer, consumer, window_next, report, failures):
                    return report
                report.replayed += in_window
            report.complete = not pending
            return report
        finally:
            consumer.close()

    def _acknowledge_and_commit(
        self,
        producer: Producer,
        consumer: Consumer,
        window_next: dict[int, int],
        report: ReplayReport,
        failures: list[str],
    ) -> bool:
        """Wait for the window's acknowledgements; commit only if every record was acknowledged."""
        left = producer.flush(30)
        if left or failures:
            report.error = (
                f"{left} record(s) unacknowledged, {len(failures)} failed ({'; '.join(failures[:3])}): "
                "nothing committed past them"
            )
            return False
        if window_next:
            consumer.commit(
                offsets=[TopicPartition(self.topic, p, offset) for p, offset in window_next.items()],
                asynchronous=False,
            )
            window_next.clear()
        return True
