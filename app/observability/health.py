"""`GET /metrics/publisher/health`: named checks, each pass/warn/fail, folded into one status."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any, Literal

from app.spool.store import SpoolStats

CheckStatus = Literal["pass", "warn", "fail"]
# An error rate this high means Kafka is effectively not taking records: unhealthy, not degraded.
FAILING_ERROR_RATE = 0.5
# A spool this full will soon refuse events (503): unhealthy.
SPOOL_FAILING_FILL = 0.9


@dataclass(frozen=True, slots=True)
class Check:
    """One named health check and what it saw."""

    name: str
    status: CheckStatus
    message: str


def _activity(last_publish_epoch: float | None, recent: dict[str, int], window: float) -> Check:
    attempted = recent.get("published", 0) + recent.get("failed", 0)
    if recent.get("published", 0):
        age = max(0.0, time.time() - (last_publish_epoch or 0.0))
        return Check("publishing_activity", "pass", f"last record acknowledged {age:.1f}s ago")
    if attempted:
        return Check("publishing_activity", "fail", f"no record acknowledged in the last {window:.0f}s")
    return Check("publishing_activity", "pass", f"idle: nothing to publish in the last {window:.0f}s")


def _rate(name: str, part: int, whole: int, threshold: float, fail_at: float | None) -> Check:
    rate = part / whole if whole else 0.0
    text = f"{rate:.2%} of {whole} records in the window (threshold {threshold:.2%})"
    if fail_at is not None and whole and rate >= fail_at:
        return Check(name, "fail", text)
    return Check(name, "warn" if whole and rate > threshold else "pass", text)


def _breaker(state: str) -> Check:
    status: CheckStatus = {"closed": "pass", "half-open": "warn"}.get(state, "fail")  # type: ignore[assignment]
    return Check("circuit_breaker", status, f"circuit breaker is {state}")


def _spool(depth: int, oldest_age: float, capacity: int) -> Check:
    text = f"{depth} records spooled (capacity {capacity}), oldest {oldest_age:.0f}s old"
    if depth >= SPOOL_FAILING_FILL * capacity:
        return Check("spool", "fail", text + ": nearly full, new events will be refused")
    return Check("spool", "warn" if depth else "pass", text)


def publisher_health(
    recent: dict[str, int],
    last_publish_epoch: float | None,
    breaker_state: str,
    window_seconds: float,
    error_rate_threshold: float,
    dlq_rate_threshold: float,
    spool: SpoolStats,
    spool_capacity: int,
    paused: bool = False,
) -> dict[str, Any]:
    """Healthy when every check passes, degraded on a warning, unhealthy on a failure.

    `recent`: the counts of the last `window_seconds` (one worker's, or every worker's added up)."""
    finished = recent.get("published", 0) + recent.get("failed", 0)
    checks = [
        _activity(last_publish_epoch, recent, window_seconds),
        _rate("error_rate", recent.get("failed", 0), finished, error_rate_threshold, FAILING_ERROR_RATE),
        _rate("dlq_rate", recent.get("dlq", 0), finished, dlq_rate_threshold, None),
        _breaker(breaker_state),
        _spool(spool.depth, spool.oldest_age_seconds(), spool_capacity),
        Check(
            "publisher_paused",
            "warn" if paused else "pass",
            "paused by an operator: events are spooled" if paused else "publishing",
        ),
    ]
    statuses = {check.status for check in checks}
    status = "unhealthy" if "fail" in statuses else "degraded" if "warn" in statuses else "healthy"
    return {"status": status, "window_seconds": window_seconds, "checks": [asdict(check) for check in checks]}
