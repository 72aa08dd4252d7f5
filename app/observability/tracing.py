"""Optional OpenTelemetry tracing: spans for the request, validation, routing and publishing.

Off unless OTEL_EXPORTER_OTLP_ENDPOINT is set; then spans go to that OTLP/HTTP endpoint (a
collector, Jaeger, Tempo...) in batches. Off, nothing is created: `span()` hands back one shared
no-op context, so the hot path pays a branch, not a span. The SDK and exporter are the optional
`otel` extra (`pip install 'event-ingest[otel]'`; the container image has them).

Each service instance gets its own TracerProvider (not the process-global one), so tests and
several apps in one process do not share exporters.
"""

from __future__ import annotations

import logging
import os
import socket
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.propagate import inject

from app.observability.request_context import current_traceparent

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

    from app.config.settings import Settings

_NO_SPAN: AbstractContextManager[None] = nullcontext()
# Routes not worth a trace: probes and scrapes every few seconds.
UNTRACED_URLS = "/healthz,/readyz,/metrics"


class TracingUnavailableError(RuntimeError):
    """OTEL_EXPORTER_OTLP_ENDPOINT is set but the SDK is not installed."""


class Tracing:
    """Spans when a provider is configured; no-ops otherwise."""

    def __init__(self, provider: TracerProvider | None = None) -> None:
        self.provider = provider
        self._tracer = provider.get_tracer("event-ingest") if provider is not None else None

    @property
    def enabled(self) -> bool:
        return self._tracer is not None

    def span(self, name: str, **attributes: Any) -> AbstractContextManager[Any]:
        """A child of the current span (the request's), made current for its duration."""
        if self._tracer is None:
            return _NO_SPAN
        return self._tracer.start_as_current_span(name, attributes=attributes)

    def record(self, name: str, start_ns: int, end_ns: int, **attributes: Any) -> None:
        """A span for work already done (FastAPI validates a body before our handler runs)."""
        if self._tracer is not None:
            self._tracer.start_span(name, start_time=start_ns, attributes=attributes).end(end_time=end_ns)

    def traceparent(self) -> str | None:
        """The current span's W3C `traceparent`, for the Kafka record headers."""
        if self._tracer is None:
            return None
        carrier: dict[str, str] = {}
        inject(carrier)
        return carrier.get("traceparent")

    def shutdown(self) -> None:
        """Export what is buffered (bounded by the SDK's timeout) and stop."""
        if self.provider is not None:
            self.provider.shutdown()


def build_tracing(settings: Settings) -> Tracing:
    if not settings.otel_exporter_otlp_endpoint:
        return Tracing(None)
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
    except ImportError as exc:
        raise TracingUnavailableError(
            f"OTEL_EXPORTER_OTLP_ENDPOINT is set but OpenTelemetry is not installed ({exc}): "
            "pip install 'event-ingest[otel]'"
        ) from None
    resource = Resource.create(
        {
            "service.name": settings.otel_service_name,
            "service.instance.id": f"{socket.gethostname()}:{os.getpid()}",
            "deployment.environment": settings.environment,
        }
    )
    provider = TracerProvider(
        resource=resource, sampler=ParentBased(TraceIdRatioBased(settings.otel_traces_sampler_arg))
    )
    endpoint = settings.otel_exporter_otlp_endpoint.rstrip("/") + "/v1/traces"
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    return Tracing(provider)


class TraceContextFilter(logging.Filter):
    """Adds `trace_id` (and `span_id`) to log records: the current span's, else the caller's traceparent."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            record.trace_id = format(context.trace_id, "032x")
            record.span_id = format(context.span_id, "016x")
        else:
            traceparent = current_traceparent.get()
            if traceparent is not None:
                record.trace_id = traceparent[3:35]
        return True
