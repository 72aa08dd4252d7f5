"""The broker's share of a single event's latency: raw confluent-kafka, closed loop, no HTTP.

Usage: python -m bench.raw_latency BOOTSTRAP OUTSTANDING SECONDS [--producers N] [--replication R]
→ prints JSON (records/s, p50 and p99 of produce-to-acknowledgement in ms).

As many producer processes as the service has workers each keep OUTSTANDING / N records in flight
and produce the next one the moment one is acknowledged: what N workers serving OUTSTANDING
clients that each send a single event and wait for its answer ask of the broker. The service's
producer settings (acks=all, idempotence, compression) and record (`bench/raw_produce.py`'s), but
`linger.ms` 0: this is the round trip alone, without a batching window, so the service's p50 at the
same concurrency can be read against it.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import time
from multiprocessing.queues import Queue

import orjson
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from app.config.settings import load_settings
from bench.raw_produce import bench_record

TOPIC = "bench.raw-latency"


def _producer_config(bootstrap: str) -> dict[str, str | int | float | bool]:
    config = load_settings(_env_file=None, kafka_brokers=bootstrap).librdkafka_config()
    return {**config, "linger.ms": 0}


def _closed_loop(bootstrap: str, outstanding: int, seconds: float, latencies: Queue[list[float]]) -> None:
    """One producer: `outstanding` records in flight until `seconds` have passed; the latencies."""
    producer = Producer(_producer_config(bootstrap))
    value, headers = bench_record("json")
    producer.produce(TOPIC, value, b"warm-up")
    producer.flush(30)
    measured: list[float] = []
    ends = time.monotonic() + seconds

    def send(key: int) -> None:
        sent = time.monotonic()

        def on_delivery(error: object, _message: object) -> None:
            now = time.monotonic()
            if error is None:
                measured.append(now - sent)
            if now < ends:
                send(key + outstanding)

        producer.produce(TOPIC, value, f"user-{key % 500}".encode(), headers=headers, on_delivery=on_delivery)

    for key in range(outstanding):
        send(key)
    while time.monotonic() < ends:
        producer.poll(0.01)
    producer.flush(30)
    latencies.put(measured)


def measure(
    bootstrap: str, outstanding: int, seconds: float, producers: int, replication: int
) -> dict[str, float]:
    """Records/s and latency percentiles (ms) of `producers` closed loops sharing `outstanding`."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    partitions = load_settings(_env_file=None).kafka_topic_partitions  # as the service's topics
    for future in admin.create_topics([NewTopic(TOPIC, partitions, replication)]).values():
        try:
            future.result(30)
        except Exception as exc:  # made by an earlier measurement against the same broker
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise
    context = multiprocessing.get_context("spawn")
    latencies: Queue[list[float]] = context.Queue()
    share = max(1, outstanding // producers)
    processes = [
        context.Process(target=_closed_loop, args=(bootstrap, share, seconds, latencies))
        for _ in range(producers)
    ]
    try:
        for process in processes:
            process.start()
        every = sorted(value for _ in processes for value in latencies.get(timeout=seconds + 90))
    finally:  # also when one never reported: none is left running
        for process in processes:
            process.join(30)
            if process.is_alive():
                process.kill()
    if not every:
        raise RuntimeError("no record was acknowledged")
    cuts = statistics.quantiles(every, n=100)
    return {
        "outstanding": share * producers,
        "producers": producers,
        "records_per_s": round(len(every) / seconds),
        "p50_ms": round(cuts[49] * 1000, 2),
        "p99_ms": round(cuts[98] * 1000, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bootstrap")
    parser.add_argument("outstanding", type=int)
    parser.add_argument("seconds", type=float)
    parser.add_argument("--producers", type=int, default=2)
    parser.add_argument("--replication", type=int, default=1)
    options = parser.parse_args()
    figures = measure(
        options.bootstrap, options.outstanding, options.seconds, options.producers, options.replication
    )
    print(orjson.dumps(figures).decode())


if __name__ == "__main__":
    main()
