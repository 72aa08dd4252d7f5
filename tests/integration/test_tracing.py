"""OpenTelemetry export, end to end: spans reach a real OTLP/HTTP receiver, joined to the caller's trace."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from app.devbroker import free_port
from app.factory import create_app
from tests.conftest import SettingsFactory, attempt, running, session_event
from tests.kafka_helpers import read_topic

pytestmark = pytest.mark.integration

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{CALLER_SPAN}-01"


class _Receiver(BaseHTTPRequestHandler):
    requests: list[ExportTraceServiceRequest]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if self.path == "/v1/traces":
            self.requests.append(ExportTraceServiceRequest.FromString(body))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def otlp_receiver() -> Iterator[tuple[str, list[ExportTraceServiceRequest]]]:
    received: list[ExportTraceServiceRequest] = []
    handler = type("Receiver", (_Receiver,), {"requests": received})
    server = ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", received
    finally:
        server.shutdown()
        server.server_close()


async def test_spans_for_request_validation_routing_and_publish_join_the_callers_trace(
    make_settings: SettingsFactory, otlp_receiver: tuple[str, list[ExportTraceServiceRequest]]
) -> None:
    endpoint, received = otlp_receiver
    settings = make_settings(otel_exporter_otlp_endpoint=endpoint, otel_service_name="ingest-under-test")
    async with running(create_app(settings)) as client:
        single = await client.post(
            "/v1/events/attempts", json=attempt(), headers={"traceparent": TRACEPARENT}
        )
        batch = await client.post(
            "/v1/events/batch",
            json={"events": [{"event_type": "session", **session_event()}]},
            headers={"traceparent": TRACEPARENT},
        )
        assert single.status_code == 202
        assert batch.status_code == 202
        assert (await client.get("/healthz")).status_code == 200
    # Leaving the app shut the tracer provider down, which exported every span.
    spans = [
        (span, resource_spans.resource)
        for request in received
        for resource_spans in request.resource_spans
        for scope_spans in resource_spans.scope_spans
        for span in scope_spans.spans
    ]
    names = [span.name for span, _ in spans]
    print(f"\n[tracing] spans={names}")
    assert {"validate", "route", "publish"} <= set(names)
    assert any(name.startswith("POST /v1/events/attempts") for name in names)
    assert any(name.startswith("POST /v1/events/batch") for name in names)
    assert not any("healthz" in name for name in names)  # probes are not traced
    assert {span.trace_id.hex() for span, _ in spans} == {TRACE_ID}
    service_names = {
        attribute.value.string_value
        for _, resource in spans
        for attribute in resource.attributes
        if attribute.key == "service.name"
    }
    assert service_names == {"ingest-under-test"}
    # Consumers continue the trace from our span, not the caller's.
    (record,) = read_topic(settings.kafka_brokers, settings.kafka_topic_attempts, expected=1)
    header = record.headers["traceparent"].decode()
    assert header.split("-")[1] == TRACE_ID
    assert header.split("-")[2] != CALLER_SPAN
    assert header.split("-")[2] in {span.span_id.hex() for span, _ in spans}


async def test_without_an_endpoint_nothing_is_traced_and_the_callers_traceparent_goes_to_kafka(
    make_settings: SettingsFactory,
) -> None:
    settings = make_settings()
    app = create_app(settings)
    assert not app.state.runtime.tracing.enabled
    async with running(app) as client:
        answer = await client.post(
            "/v1/events/attempts", json=attempt(), headers={"traceparent": TRACEPARENT}
        )
        assert answer.status_code == 202
    (record,) = read_topic(settings.kafka_brokers, settings.kafka_topic_attempts, expected=1)
    assert record.headers["traceparent"].decode() == TRACEPARENT
