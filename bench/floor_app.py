"""The design's floor: the least an HTTP-to-Kafka service in Python with these libraries does.

A raw ASGI app, served by the same uvicorn with the same worker count as the service, that takes
the same request bodies and for each event: gives it an id, serializes it, produces one record with
its key and the service's four headers (a second record to a second topic for an attempt of
quality >= 4, as the service's default rules do), and answers 202 with each event's id once
librdkafka has acknowledged every record of the request (one future a request, reports on a poll
thread), with the service's producer settings (acks=all, idempotence, snappy, linger.ms; no eager
sends, so a record at a quiet moment waits out linger.ms; with KAFKA_PRODUCER_BATCH_TIMEOUT=0ms,
as `make bench`'s `floor-at-once`, every record goes at once). No FastAPI, authentication, routing,
idempotency, time window, metrics or logging: what is left is HTTP, JSON and the Kafka client, so
the ratio of the service's events/s to these says what the service's own code costs, and these
alone say how far the libraries go on this machine.

`FLOOR_VALIDATION=pydantic` validates and serializes with the service's event models (one
pydantic-core call for the batch, as the service's all-valid batch is), instead of orjson alone:
the libraries the service calls, without the service's code between the calls.

    KAFKA_BROKERS=127.0.0.1:9092 python -m uvicorn bench.floor_app:app --workers 2 --port 8001
"""

from __future__ import annotations

import asyncio
import os
import threading
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson
from confluent_kafka import KafkaError, Message, Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic
from pydantic import TypeAdapter

from app.config.settings import load_settings
from event_models.models import AnyEvent, BaseEvent

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

TOPIC = "bench.floor"
# The service's default rules also send an attempt of quality >= 4 to the ML-training topic: a
# second record, produced here too, so that Kafka's share of the work is the service's.
TRAINING_TOPIC = "bench.floor.training"
CONTENT_TYPE = "application/json"
Headers = list[tuple[str, str | bytes | None]]
Record = tuple[bytes, bytes, Headers, tuple[str, ...]]  # key, value, headers, topics
_BATCH: TypeAdapter[list[AnyEvent]] = TypeAdapter(list[AnyEvent])


class _Acks:
    """The reports of one request's records; the last one wakes its coroutine."""

    __slots__ = ("failed", "future", "loop", "waiting")

    def __init__(self, loop: asyncio.AbstractEventLoop, count: int) -> None:
        self.loop = loop
        self.future: asyncio.Future[None] = loop.create_future()
        self.waiting = count
        self.failed = 0

    def on_delivery(self, error: KafkaError | None, _message: Message) -> None:
        if error is not None:
            self.failed += 1
        self.waiting -= 1  # poll thread only, under the GIL
        if self.waiting == 0:
            self.loop.call_soon_threadsafe(self.future.set_result, None)


class FloorApp:
    """One producer and one poll thread per worker, started by the ASGI lifespan."""

    def __init__(self) -> None:
        self.validation = os.environ.get("FLOOR_VALIDATION", "none")
        self.producer: Producer | None = None
        self.running = False
        self.poller: threading.Thread | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self._http(scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self._start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self._stop()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _start(self) -> None:
        settings = load_settings(_env_file=None)  # KAFKA_BROKERS and the other KAFKA_* settings
        admin = AdminClient({"bootstrap.servers": settings.kafka_brokers})
        topics = [
            NewTopic(name, settings.kafka_topic_partitions, settings.kafka_topic_replication_factor)
            for name in (TOPIC, TRAINING_TOPIC)
        ]
        for future in admin.create_topics(topics).values():
            try:
                future.result(timeout=30)
            except Exception as error:  # created by the other worker, or by an earlier run
                if "TOPIC_ALREADY_EXISTS" not in str(error) and "already exists" not in str(error):
                    raise
        self.producer = Producer({**settings.librdkafka_config(), "client.id": "bench-floor"})
        self.running = True
        self.poller = threading.Thread(target=self._poll, name="floor-poll", daemon=True)
        self.poller.start()

    def _poll(self) -> None:
        while self.running and self.producer is not None:
            self.producer.poll(0.1)

    def _stop(self) -> None:
        self.running = False
        if self.poller is not None:
            self.poller.join(timeout=5)
        if self.producer is not None:
            self.producer.flush(10)

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] != "POST":  # the readiness probe
            await _answer(send, 200, b'{"status":"ok"}')
            return
        body = b""
        more = True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        data = orjson.loads(body)
        items: list[Any] = data["events"] if isinstance(data, dict) and "events" in data else [data]
        records = self._records(items, scope["path"])
        acks = _Acks(asyncio.get_running_loop(), sum(len(topics) for _, _, _, topics in records))
        produce = self.producer.produce  # type: ignore[union-attr]
        for key, value, headers, topics in records:
            for topic in topics:
                produce(topic, value, key, headers=headers, on_delivery=acks.on_delivery)
        await acks.future
        if acks.failed:
            await _answer(send, 500, b'{"status":"failed"}')
        else:
            # Each event's id and status, as the service answers (its topics aside).
            results = [{"event_id": headers[0][1], "status": "accepted"} for _, _, headers, _ in records]
            await _answer(send, 202, orjson.dumps({"results": results}))

    def _records(self, items: list[Any], path: str) -> list[Record]:
        if not path.endswith("/batch"):
            for item in items:
                item.setdefault("event_type", "attempt")
        if self.validation == "pydantic":
            events: list[BaseEvent] = list(_BATCH.validate_python(items))
            return [
                (
                    event.user_id.encode(),
                    event.__pydantic_serializer__.to_json(event),
                    _headers(event.event_id_text, event.event_type),
                    _topics(getattr(event, "quality", None)),
                )
                for event in events
            ]
        records = []
        for item in items:
            event_id = str(uuid.uuid4())
            item["event_id"] = event_id
            headers = _headers(event_id, item["event_type"])
            records.append(
                (str(item["user_id"]).encode(), orjson.dumps(item), headers, _topics(item.get("quality")))
            )
        return records


def _topics(quality: Any) -> tuple[str, ...]:
    return (TOPIC, TRAINING_TOPIC) if isinstance(quality, int) and quality >= 4 else (TOPIC,)


def _headers(event_id: str, event_type: str) -> Headers:
    return [
        ("event_id", event_id),
        ("event_type", event_type),
        ("schema_version", "1"),
        ("content_type", CONTENT_TYPE),
    ]


async def _answer(send: Send, status: int, body: bytes) -> None:
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


app = FloorApp()
