"""Log lines carry the trace id: the current span's, or else the caller's traceparent."""

from __future__ import annotations

import logging

from opentelemetry.sdk.trace import TracerProvider

from app.observability.request_context import current_traceparent
from app.observability.tracing import TraceContextFilter, Tracing


def _record() -> logging.LogRecord:
    return logging.makeLogRecord({"msg": "hello"})


def test_trace_id_from_the_current_span() -> None:
    provider = TracerProvider()
    tracing = Tracing(provider)
    with tracing.span("work") as span:
        record = _record()
        TraceContextFilter().filter(record)
        context = span.get_span_context()
    assert vars(record)["trace_id"] == format(context.trace_id, "032x")
    assert vars(record)["span_id"] == format(context.span_id, "016x")
    provider.shutdown()


def test_trace_id_from_the_callers_traceparent_when_tracing_is_off() -> None:
    token = current_traceparent.set("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
    try:
        record = _record()
        TraceContextFilter().filter(record)
    finally:
        current_traceparent.reset(token)
    assert vars(record)["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"


def test_no_trace_no_field() -> None:
    record = _record()
    TraceContextFilter().filter(record)
    assert not hasattr(record, "trace_id")


def test_disabled_tracing_costs_a_shared_no_op() -> None:
    tracing = Tracing()
    assert not tracing.enabled
    assert tracing.span("a") is tracing.span("b")
    assert tracing.traceparent() is None
