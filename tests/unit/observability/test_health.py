"""Health: named checks over a sliding window, folded into healthy / degraded / unhealthy."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from app.observability.health import publisher_health
from app.observability.publisher_metrics import PublisherMetrics
from app.observability.rolling import RollingCounts
from app.spool.store import SpoolStats


def _health(
    metrics: PublisherMetrics, breaker: str = "closed", spool: SpoolStats = SpoolStats(0, None)
) -> dict[str, object]:
    return publisher_health(
        metrics.recent.totals(),
        metrics.last_publish_epoch,
        breaker,
        300,
        error_rate_threshold=0.05,
        dlq_rate_threshold=0.01,
        spool=spool,
        spool_capacity=100,
    )


def _checks(body: dict[str, object]) -> dict[str, str]:
    checks = body["checks"]
    assert isinstance(checks, list)
    return {check["name"]: check["status"] for check in checks}


def test_idle_service_is_healthy() -> None:
    body = _health(PublisherMetrics(CollectorRegistry(), 300))
    assert body["status"] == "healthy"


def test_some_errors_degrade_and_mostly_errors_fail() -> None:
    metrics = PublisherMetrics(CollectorRegistry(), 300)
    for _ in range(90):
        metrics.record_published("t", 1, 0.01)
    for _ in range(10):
        metrics.record_failed("t", "_MSG_TIMED_OUT")
    assert _health(metrics)["status"] == "degraded"
    assert _checks(_health(metrics))["error_rate"] == "warn"

    for _ in range(100):
        metrics.record_failed("t", "_MSG_TIMED_OUT")
    assert _health(metrics)["status"] == "unhealthy"


def test_only_failures_in_the_window_fail_the_activity_check() -> None:
    metrics = PublisherMetrics(CollectorRegistry(), 300)
    metrics.record_failed("t", "_TRANSPORT")
    assert _checks(_health(metrics))["publishing_activity"] == "fail"


def test_breaker_state_maps_to_check_status() -> None:
    metrics = PublisherMetrics(CollectorRegistry(), 300)
    assert _health(metrics, "half-open")["status"] == "degraded"
    assert _health(metrics, "open")["status"] == "unhealthy"


def test_rolling_counts_forget_the_past() -> None:
    now = [0.0]
    counts = RollingCounts(10, buckets=5, clock=lambda: now[0])
    counts.add("published", 3)
    now[0] = 5
    counts.add("published")
    assert counts.totals() == {"published": 4}
    now[0] = 12
    assert counts.totals() == {"published": 1}
    now[0] = 30
    assert counts.totals() == {}


def test_snapshot_rates_and_moving_average() -> None:
    metrics = PublisherMetrics(CollectorRegistry(), 300)
    metrics.record_published("a", 1, 0.010)
    metrics.record_published("a", 1, 0.020)
    metrics.record_failed("b", "X")
    snapshot = metrics.snapshot()

    assert snapshot["events_published"] == 2
    assert snapshot["success_rate"] == round(2 / 3, 6)
    assert snapshot["average_latency_ms"] == 11.0  # 10 + 0.1 * (20 - 10)
    assert snapshot["topics"] == {"a": {"published": 2}, "b": {"failed": 1}}


def test_spool_backlog_degrades_and_a_nearly_full_spool_fails() -> None:
    metrics = PublisherMetrics(CollectorRegistry(), 300)
    assert _checks(_health(metrics, spool=SpoolStats(5, None)))["spool"] == "warn"
    assert _health(metrics, spool=SpoolStats(95, None))["status"] == "unhealthy"
