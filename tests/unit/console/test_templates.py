"""The overview fragment drawn from a publisher-metrics body in each state, and escaping."""

from __future__ import annotations

from typing import Any

from app.console.access import Viewer
from app.console.app import PREFIX, console_templates


def _viewer() -> Viewer:
    return Viewer("ops", "eik_x", frozenset({"admin", "metrics"}), "cookie", "token", auth_off=False)


def _render(template: str, **context: Any) -> str:
    return console_templates().env.get_template(template).render(prefix=PREFIX, viewer=_viewer(), **context)


def _metrics(state: str) -> dict[str, Any]:
    return {
        "circuit_breaker": {
            "state": state,
            "transitions": [{"at": 1_764_590_400.0, "state": "open", "pid": 41}],
        },
        "spool": {"depth": 12, "capacity": 1000, "oldest_age_seconds": 3.5},
        "paused": False,
        "queue_length": 4,
        "in_flight": 2,
        "average_latency_ms": None,
        "workers": [{"pid": 41, "circuit_breaker": {"state": state}, "queue_length": 4, "in_flight": 2,
                     "events_published": 9}],
    }  # fmt: skip


def test_an_open_breaker_its_transitions_and_the_spool_are_shown() -> None:
    page = _render(
        "overview_live.html",
        metrics=_metrics("open"),
        health={"status": "unhealthy", "checks": [{"name": "circuit_breaker", "status": "fail"}]},
        ready={"status": "not ready"},
        ready_ok=False,
        rates={"published": 1.5},
        points=[],
        p50_ms=None,
        p99_ms=None,
        totals={"published": 1234},
    )
    assert 'class="status bad">open<' in page
    assert "2025-12-01 12:00:00 UTC → open (worker 41)" in page
    assert "data-spool-depth>12<" in page
    assert 'data-ready="false"' in page
    assert "1,234" in page
    assert "Average acknowledgement: \u2013" in page  # a dash: none yet


def test_values_from_the_service_are_escaped() -> None:
    result = {
        "matched_rules": ["<b>rule</b>"],
        "unrouted": False,
        "records": [
            {"topic": "t", "rule_id": "<b>rule</b>", "key": "<script>x</script>", "message": {"a": "<i>"}}
        ],
    }
    page = _render("rule_test.html", result=result, error=None)
    assert "<script>x" not in page
    assert "&lt;script&gt;x&lt;/script&gt;" in page
    assert "<b>rule" not in page
    assert "&lt;i&gt;" in page
