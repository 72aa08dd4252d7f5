"""The component's Prometheus metrics (the stats the stream-pipeline design lists) and its HTTP
endpoints: `/metrics`, `/health` (the process runs) and `/ready` (partitions assigned, processing)."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST


class AnalyticsMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.consumed = Counter(
            "analytics_records_consumed", "Input records processed", ["topic"], registry=r
        )
        self.produced = Counter(
            "analytics_windows_produced", "Closed windows written", ["aggregate"], registry=r
        )
        self.late = Counter(
            "analytics_late_events", "Events beyond the grace, written to the late topic", ["aggregate"],
            registry=r,
        )  # fmt: skip
        self.dead_lettered = Counter(
            "analytics_dead_letters", "Input records that cannot be used, written to the DLQ", ["topic"],
            registry=r,
        )  # fmt: skip
        self.replayed = Counter(
            "analytics_replayed_records_dropped",
            "Re-keyed attempts seen twice after a crash (at-least-once), counted once",
            registry=r,
        )
        self.processing_errors = Counter(
            "analytics_processing_errors", "Errors while processing a record", registry=r
        )
        self.consumer_errors = Counter("analytics_consumer_errors", "Kafka consumer errors", registry=r)
        self.producer_errors = Counter("analytics_producer_errors", "Kafka producer errors", registry=r)
        self.lag = Gauge(
            "analytics_consumer_lag", "Records behind the partition's end", ["topic", "partition"], registry=r
        )
        self.committed = Gauge(
            "analytics_committed_offset", "The group's committed offset", ["topic", "partition"], registry=r
        )
        self.commits = Counter(
            "analytics_commits", "Committed offset advances seen (per partition, polled every lag interval)",
            registry=r,
        )  # fmt: skip
        self.commit_errors = Counter(
            "analytics_commit_errors",
            "Checkpoints that failed to commit (each stops the process)",
            registry=r,
        )
        self.assigned = Gauge("analytics_assigned_partitions", "Input partitions assigned", registry=r)
        self.last_processed = Gauge(
            "analytics_last_processed_timestamp_seconds", "When a record was last processed", registry=r
        )

    def on_stats(self, text: str) -> None:
        """librdkafka's consumer statistics: lag per assigned partition, partitions assigned."""
        stats = json.loads(text)
        assigned = 0
        for topic, topic_stats in stats.get("topics", {}).items():
            for number, partition in topic_stats.get("partitions", {}).items():
                if int(number) < 0 or partition.get("fetch_state") in (None, "none"):
                    continue
                assigned += 1
                # From the consumer's own position: under exactly-once the offsets are committed by
                # the producer's transactions, which librdkafka's consumer_lag does not see.
                end = partition.get("ls_offset", -1)
                end = end if end >= 0 else partition.get("hi_offset", -1)
                position = partition.get("app_offset", -1)
                position = position if position >= 0 else partition.get("committed_offset", -1)
                if end >= 0 and position >= 0:
                    self.lag.labels(topic, number).set(max(end - position, 0))
        self.assigned.set(assigned)

    def on_committed(self, offsets: dict[tuple[str, int], int]) -> None:
        """The group's committed offsets as the broker has them (under exactly-once they are
        committed by the producer's transactions, which the consumer's statistics do not show)."""
        for (topic, partition), offset in offsets.items():
            gauge = self.committed.labels(topic, str(partition))
            if offset > gauge._value.get():
                self.commits.inc()
            gauge.set(offset)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class HealthServer:
    """`/metrics`, `/health` and `/ready` on a thread of its own."""

    def __init__(self, host: str, port: int, metrics: AnalyticsMetrics, status: dict[str, Any]) -> None:
        self.metrics = metrics
        self.status = status
        handler = self._handler()
        self.server = ThreadingHTTPServer((host, port), handler)
        self.thread = threading.Thread(target=self.server.serve_forever, name="analytics-http", daemon=True)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def ready(self) -> bool:
        return bool(self.status.get("running")) and self.metrics.assigned._value.get() > 0

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/metrics":
                    self._answer(200, owner.metrics.exposition(), CONTENT_TYPE_LATEST)
                elif self.path in ("/health", "/ready"):
                    ready = owner.ready()
                    body = {**owner.status, "ready": ready, "time": time.time()}
                    code = 200 if self.path == "/health" or ready else 503
                    self._answer(code, json.dumps(body).encode(), "application/json")
                else:
                    self._answer(404, b'{"detail": "not found"}', "application/json")

            def _answer(self, code: int, body: bytes, content_type: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # scrapes every few seconds would drown the log

        return Handler
