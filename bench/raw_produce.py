"""The Kafka client's ceiling: confluent-kafka producing the service's serialized records, nothing else.

Usage: python bench/raw_produce.py BOOTSTRAP SERIALIZATION COMPRESSION SECONDS → prints JSON.
Same producer settings as the service (acks=all, idempotence, linger, batch size).
"""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime

import orjson
from confluent_kafka import Producer

from app.config.settings import load_settings
from app.publishing.records import event_headers
from app.serialization.codecs import serializer_for
from event_models.models import AttemptEvent

Headers = list[tuple[str, str | bytes | None]]


def bench_record(serialization: str) -> tuple[bytes, Headers]:
    """The value and headers of one attempt as the service would publish it."""
    event = AttemptEvent.model_validate(
        {
            "user_id": "bench-user",
            "occurred_at": datetime.now(UTC).isoformat(),
            "client_attempt_id": "x",
            "item_id": "item-1",
            "correct": True,
            "quality": 5,
            "time_taken_ms": 1000,
        }
    )
    serializer = serializer_for(serialization)
    headers: Headers = [*event_headers(event, None, serializer.content_type)]  # the publisher's own
    return serializer.serialize(event), headers


def main() -> None:
    bootstrap, serialization, compression, seconds = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    settings = load_settings(_env_file=None, kafka_brokers=bootstrap, kafka_compression_type=compression)
    value, headers = bench_record(serialization)
    producer = Producer(settings.librdkafka_config())
    acked = 0

    def on_delivery(error: object, _message: object) -> None:
        nonlocal acked
        if error is None:
            acked += 1

    started = time.perf_counter()
    sent = 0
    while time.perf_counter() - started < seconds:
        for n in range(1000):
            try:
                producer.produce(
                    "bench.raw",
                    value=value,
                    key=f"user-{n % 500}".encode(),
                    headers=headers,
                    on_delivery=on_delivery,
                )
                sent += 1
            except BufferError:
                producer.poll(0.01)
        producer.poll(0)
    producer.flush(30)
    elapsed = time.perf_counter() - started
    print(
        orjson.dumps(
            {"records": acked, "seconds": round(elapsed, 3), "records_per_s": round(acked / elapsed)}
        ).decode()
    )


if __name__ == "__main__":
    main()
