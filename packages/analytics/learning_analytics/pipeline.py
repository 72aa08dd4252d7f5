"""The stream topology on Quix Streams: attempts -> per-learner and per-item windows, sessions ->
per-learner days; records that cannot be used -> the DLQ, events too late for their window -> the
late topic. Windows are by event time (`occurred_at`) and emitted once, when they close."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from quixstreams import Application, State, message_context
from quixstreams.dataframe import StreamingDataFrame
from quixstreams.models import Topic
from quixstreams.models.serializers import Deserializer, SerializationContext

from learning_analytics import aggregates, records
from learning_analytics.metrics import AnalyticsMetrics
from learning_analytics.settings import AnalyticsSettings

DAY_MS = 24 * 3600 * 1000
Parse = Callable[[bytes, records.Headers], dict[str, Any] | records.Bad]


class RecordDeserializer(Deserializer):
    """Never raises: a record that cannot be used becomes `records.Bad`, routed to the DLQ."""

    def __init__(self, parse: Parse) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.parse = parse

    def __call__(self, value: bytes, ctx: SerializationContext) -> dict[str, Any] | records.Bad:
        headers = ctx.headers if isinstance(ctx.headers, list) else None
        return self.parse(value, headers)


def _with_source(value: dict[str, Any]) -> dict[str, Any]:
    """The attempt with its place in the input topic, carried through the repartition topic."""
    context = message_context()
    return {**value, "src": [context.partition, context.offset]}


def event_time(value: Any, _headers: Any, timestamp: int, _type: Any) -> int:
    """The window time of a record: its `occurred_at`; a bad record keeps Kafka's timestamp."""
    return int(value["ts"]) if isinstance(value, dict) else timestamp


def _written_now(_value: Any, _key: Any, _timestamp: int, _headers: Any) -> int:
    """The Kafka timestamp of a record written to the repartition topic: the time it is written.
    The broker deletes records by their timestamp once past the topic's retention (Quix takes the
    input topics'); with the event time, attempts older than that (a backfill, a long outage) would
    be deleted before the item windows read them."""
    return time.time_ns() // 1_000_000


def _occurred(value: dict[str, Any], _key: Any, _timestamp: int, _headers: Any) -> int:
    """Back to the event time once re-keyed: the item windows are by `occurred_at` too."""
    return int(value["ts"])


@dataclass(frozen=True)
class Topics:
    attempts: str
    sessions: str
    learner: str
    item: str
    session_days: str
    dlq: str
    late_suffix: str

    def late(self, source: str) -> str:
        return source + self.late_suffix


class Topology:
    """Adds the aggregates ANALYTICS_AGGREGATES names to a Quix application."""

    def __init__(
        self,
        app: Application,
        settings: AnalyticsSettings,
        topics: Topics,
        metrics: AnalyticsMetrics,
        exactly_once: bool,
    ) -> None:
        self.app, self.settings, self.topics, self.metrics = app, settings, topics, metrics
        self.exactly_once = exactly_once
        self.dlq = app.topic(topics.dlq, value_serializer="bytes", key_serializer="bytes")

    def build(self) -> None:
        wanted = self.settings.aggregate_set
        if wanted & {"learner", "item"}:
            attempts = self._input(self.topics.attempts, records.attempt)
            if "learner" in wanted:
                self._windowed(attempts, "learner", self.topics.learner, self.settings.window_ms,
                               aggregates.learner_start, aggregates.learner_add, aggregates.learner_record,
                               late_topic=self.topics.late(self.topics.attempts))  # fmt: skip
            if "item" in wanted:
                by_item = self._once_per_source_record(
                    attempts.apply(_with_source)
                    .set_timestamp(_written_now)
                    .group_by(lambda value: value["item_id"], name="item_id")
                    .set_timestamp(_occurred)
                )
                self._windowed(by_item, "item", self.topics.item, self.settings.window_ms,
                               aggregates.item_start, aggregates.item_add, aggregates.item_record,
                               late_topic=self.topics.late(self.topics.attempts))  # fmt: skip
        if "sessions" in wanted:
            sessions = self._input(self.topics.sessions, records.session)
            self._windowed(sessions, "sessions", self.topics.session_days, DAY_MS,
                           aggregates.sessions_start, aggregates.sessions_add, aggregates.sessions_record,
                           late_topic=self.topics.late(self.topics.sessions))  # fmt: skip

    def _input(self, name: str, parse: Parse) -> StreamingDataFrame:
        """The topic's usable records; the others go to the DLQ with a reason header."""
        topic: Topic = self.app.topic(
            name,
            key_deserializer="str",
            value_deserializer=RecordDeserializer(parse),
            timestamp_extractor=event_time,
        )
        sdf = self.app.dataframe(topic)
        bad = sdf.filter(lambda value: isinstance(value, records.Bad))

        def reason(value: records.Bad, _key: Any, _timestamp: int, headers: Any) -> list[tuple[str, bytes]]:
            self.metrics.dead_lettered.labels(name).inc()
            kept = [(k, v) for k, v in (headers or []) if k not in ("dlq_reason", "original_topic")]
            return [*kept, ("dlq_reason", value.reason.encode()), ("original_topic", name.encode())]

        bad.set_headers(reason).apply(lambda value: value.raw).to_topic(self.dlq)
        return sdf.filter(lambda value: not isinstance(value, records.Bad))

    def _once_per_source_record(self, sdf: StreamingDataFrame) -> StreamingDataFrame:
        """Under at-least-once, attempts re-read after a crash are written to the repartition topic
        again, and the item windows would count them twice. Records of one source partition reach
        an item in their source order (an idempotent producer, one partition per item), so a record
        whose source offset is not past the last one seen from that partition is such a copy."""
        if self.exactly_once:  # the copies belong to aborted transactions, never read
            return sdf
        replayed = self.metrics.replayed

        def mark_replayed(value: dict[str, Any], state: State[str, Any]) -> dict[str, Any]:
            partition, offset = value["src"]
            seen: dict[str, int] = state.get("sources", {})
            if offset <= seen.get(str(partition), -1):
                replayed.inc()
                return {**value, "replayed": True}
            state.set("sources", {**seen, str(partition): offset})
            return value

        return sdf.apply(mark_replayed, stateful=True).filter(lambda value: not value.get("replayed"))

    def _windowed(
        self,
        sdf: StreamingDataFrame,
        aggregate: str,
        output: str,
        duration_ms: int,
        start: Callable[[dict[str, Any]], dict[str, Any]],
        add: Callable[[dict[str, Any], dict[str, Any]], dict[str, Any]],
        record: Callable[[dict[str, Any]], dict[str, Any]],
        late_topic: str,
    ) -> None:
        grace_ms = self.settings.grace_ms
        metrics = self.metrics

        late_events = metrics.late.labels(aggregate)

        def mark_late(value: dict[str, Any], state: State[str, Any]) -> dict[str, Any]:
            # Per key in the topic's state store (changelogged like the windows): the latest event
            # time seen and the late events so far, as one entry (one read per event).
            latest, late = state.get("clock", (0, 0))
            if aggregates.is_late(value["ts"], latest, duration_ms, grace_ms):
                state.set("clock", (latest, late + 1))
                late_events.inc()
                return {**value, "late": True, "late_by_ms": latest - grace_ms - value["ts"]}
            if value["ts"] > latest:  # a write only when time moves on: each is a changelog record
                state.set("clock", (value["ts"], late))
            return {**value, "late": False}

        marked = sdf.apply(mark_late, stateful=True)
        late_out = self.app.topic(late_topic, value_serializer="json", key_serializer="str")
        (
            marked.filter(lambda value: value["late"])
            .apply(
                lambda value: {**value, "aggregate": aggregate, "occurred_at": aggregates.iso(value["ts"])}
            )
            .to_topic(late_out)
        )

        produced = metrics.produced.labels(aggregate)

        def emitted(window: dict[str, Any], state: State[str, Any]) -> dict[str, Any]:
            produced.inc()
            return {
                **record(window),
                "late_events_dropped": state.get("clock", (0, 0))[1],
            }  # so far, for this key

        def closed_already(*_args: Any, **_kwargs: Any) -> bool:
            metrics.late.labels(aggregate).inc()  # marked above, so only if the two rules ever differ
            return True

        (
            marked.filter(lambda value: not value["late"])
            .tumbling_window(duration_ms, grace_ms, name=aggregate, on_late=closed_already)
            .reduce(add, start)
            .final()
            .apply(emitted, stateful=True)
            .to_topic(self.app.topic(output, value_serializer="json", key_serializer="str"))
        )
