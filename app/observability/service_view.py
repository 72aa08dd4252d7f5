"""The whole service's publisher figures when it runs several workers.

Each worker counts for itself (`PublisherMetrics`). For the service as a whole:
- counts are read from prometheus-client's multiprocess files, which every worker updates on each
  increment: exact, and current at the moment of the request, whichever worker answers it;
- what is not a count (circuit breaker, producer queue, latency average, the health window) comes
  from a small report each worker writes beside those files every `REPORT_INTERVAL_SECONDS`.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson
from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

from app.observability.publisher_metrics import PublisherCounts

REPORT_INTERVAL_SECONDS = 0.5
# A report this old belongs to a worker that stopped writing (hung or gone): left out.
STALE_REPORT_SECONDS = 10.0
BREAKER_SEVERITY = {"closed": 0, "half-open": 1, "open": 2}

# Prometheus sample name -> (PublisherCounts field, the label that names a topic, if any)
_COUNTERS = {
    "event_ingest_events_published_total": ("published", "topic"),
    "event_ingest_events_failed_total": ("failed", "topic"),
    "event_ingest_events_retried_total": ("retried", "topic"),
    "event_ingest_events_dlq_total": ("dlq", "original_topic"),
    "event_ingest_events_unrouted_total": ("unrouted", None),
    "event_ingest_producer_restarts_total": ("producer_restarts", None),
    "event_ingest_records_spooled_total": ("spooled", None),
    "event_ingest_records_relayed_total": ("relayed", None),
    "event_ingest_events_duplicate_total": ("duplicate", None),
}


def multiprocess_directory() -> Path | None:
    """The run's shared directory when the service has several workers, else None."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    return Path(directory) if directory else None


def summed_counts(directory: Path) -> PublisherCounts:
    """Every worker's counts added up, read from the multiprocess files (dead workers' included:
    the counts are the service's since it started)."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(directory))  # type: ignore[no-untyped-call]
    counts = PublisherCounts()
    per_topic: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for family in registry.collect():
        for sample in family.samples:
            value = int(sample.value)
            if sample.name == "event_ingest_events_rejected_total":
                counts.rejected[sample.labels["reason"]] = (
                    counts.rejected.get(sample.labels["reason"], 0) + value
                )
                continue
            known = _COUNTERS.get(sample.name)
            if known is None or not value:
                continue
            field, topic_label = known
            setattr(counts, field, getattr(counts, field) + value)
            if topic_label:
                per_topic[sample.labels[topic_label]][field] += value
    counts.per_topic = {topic: dict(figures) for topic, figures in per_topic.items()}
    return counts


class WorkerReports:
    """One JSON file per worker (`<pid>.json`) in the run's shared directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory / "workers"
        self.own = self.directory / f"{os.getpid()}.json"

    def write(self, report: dict[str, Any]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        partial = self.own.with_suffix(".tmp")
        partial.write_bytes(orjson.dumps(report))
        partial.replace(self.own)  # readers never see half a file

    def others(self) -> list[dict[str, Any]]:
        """The reports of the other live workers."""
        reports = []
        now = time.time()
        for path in self.directory.glob("*.json"):
            if path == self.own:
                continue
            try:
                report = orjson.loads(path.read_bytes())
            except (OSError, orjson.JSONDecodeError):  # removed or replaced while we read: skip it
                continue
            if now - report.get("reported_at", 0) < STALE_REPORT_SECONDS and _alive(report.get("pid", 0)):
                reports.append(report)
        return reports

    def remove(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.own.unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: not one of our workers
        return False
    return pid > 0


def worst_breaker_state(states: list[str]) -> str:
    return max(states, key=lambda state: BREAKER_SEVERITY.get(state, 2), default="closed")


def combined_recent(reports: list[dict[str, Any]]) -> dict[str, int]:
    """The health window's counts of every worker, added up."""
    summed: dict[str, int] = defaultdict(int)
    for report in reports:
        for name, amount in report.get("recent", {}).items():
            summed[name] += amount
    return dict(summed)


def combined_latency_ms(reports: list[dict[str, Any]]) -> float | None:
    """The workers' latency averages, weighted by the records each published."""
    weighted = [
        (float(report["average_latency_ms"]), int(report["events_published"]))
        for report in reports
        if report.get("average_latency_ms") is not None
    ]
    if not weighted:
        return None
    total = sum(weight for _, weight in weighted)
    if not total:
        return round(sum(latency for latency, _ in weighted) / len(weighted), 3)
    return round(sum(latency * weight for latency, weight in weighted) / total, 3)


def merged_transitions(reports: list[dict[str, Any]], keep: int = 20) -> list[dict[str, Any]]:
    """Every worker's breaker transitions in time order (the latest `keep`), each with its worker."""
    merged = [
        {**transition, "pid": report["pid"]}
        for report in reports
        for transition in report["circuit_breaker"]["transitions"]
    ]
    return sorted(merged, key=lambda transition: float(transition["at"]))[-keep:]


def latest_publish(reports: list[dict[str, Any]]) -> float | None:
    """When any worker last had a record acknowledged (epoch seconds), or None."""
    return max((float(r["last_publish_epoch"]) for r in reports if r["last_publish_epoch"]), default=None)
