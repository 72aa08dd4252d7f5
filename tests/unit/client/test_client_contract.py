"""The client's promises: `publish_event` is a bool and never raises, and no call outlives the time
it was given (`timeout=`, `delivery_timeout`), with a fake transport at the HTTP boundary."""

from __future__ import annotations

import logging
import time
from typing import Any

import httpx
import pytest

from ingest_client import AsyncEventClient, EventClient
from ingest_client.protocol import IngestError
from tests.conftest import activity_event


def _activity(**fields: Any) -> dict[str, Any]:
    return {"event_type": "activity", **activity_event(**fields)}


def _unavailable(request: httpx.Request) -> httpx.Response:
    return httpx.Response(503, headers={"Retry-After": "0"}, json={"code": "spool_full", "retriable": True})


def _unavailable_with_backoff(request: httpx.Request) -> httpx.Response:
    """503 without Retry-After: the client waits its own backoff between retries (with
    `Retry-After: 0` a fast machine runs 1000 retries within a 0.2 s deadline)."""
    return httpx.Response(503, json={"code": "spool_full", "retriable": True})


def _refusing(request: httpx.Request) -> httpx.Response:
    return httpx.Response(
        422, json={"detail": [{"field": "verb", "message": "bad"}], "code": "validation_error"}
    )


def _unreachable(request: httpx.Request) -> httpx.Response:
    raise httpx.ConnectError("connection refused")


@pytest.mark.parametrize(
    ("handler", "event", "logged"),
    [
        (_unreachable, _activity(), "cannot reach"),
        (_refusing, _activity(), "refused (422)"),
        (_unavailable, _activity(), "refused (503)"),  # still unavailable after the retries
        (_unavailable, {"event_type": "activity", "user_id": ""}, "invalid event"),
        (_unavailable, {"event_type": "no-such-type"}, "invalid event"),
        (_unavailable, None, "an event is a model or a mapping"),
    ],
)
def test_publish_event_is_false_and_logs_why_instead_of_raising(
    handler: Any, event: Any, logged: str, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        caplog.at_level(logging.WARNING, logger="ingest_client"),
        EventClient(
            transport=httpx.MockTransport(handler), retries=2, backoff=0.0, delivery_timeout=1
        ) as client,
    ):
        assert client.publish_event(event) is False
    assert any(logged in record.getMessage() for record in caplog.records), caplog.text


async def test_async_publish_event_is_false_and_logs_why(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="ingest_client"):
        async with AsyncEventClient(
            transport=httpx.MockTransport(_unreachable), retries=1, backoff=0.0
        ) as client:
            assert await client.publish_event(_activity()) is False
            assert await client.publish_event({"event_type": "activity"}) is False
    assert [record.getMessage().split(":")[0] for record in caplog.records] == [
        "event not published",
        "event not published",
    ]


def test_delivery_timeout_bounds_a_call_across_its_retries() -> None:
    calls: list[httpx.Request] = []

    def unavailable(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(503, json={"code": "spool_full"})

    client = EventClient(transport=httpx.MockTransport(unavailable), retries=1000, backoff=0.05,
                         max_backoff=0.05, delivery_timeout=0.5)  # fmt: skip
    started = time.monotonic()
    with pytest.raises(
        IngestError, match=r"not delivered within 0\.5 s \(\d+ attempt\(s\)\); last: HTTP 503"
    ):
        client.publish(_activity())
    assert time.monotonic() - started < 2  # bounded by the deadline, not by 1000 retries
    assert len(calls) > 1
    # A call's own timeout wins over the client's. (Retries enough to outlast it: with the default
    # five, jittered delays can all be short and run out before the 0.2 s do.)
    started = time.monotonic()
    with pytest.raises(IngestError, match=r"not delivered within 0\.2 s"):
        EventClient(transport=httpx.MockTransport(unavailable), retries=1000, backoff=0.05,
                    max_backoff=0.05, delivery_timeout=60).publish(_activity(), timeout=0.2)  # fmt: skip
    assert time.monotonic() - started < 2


def test_flush_within_a_timeout_keeps_what_it_could_not_deliver() -> None:
    answers: list[httpx.Response] = []
    requests: list[httpx.Request] = []

    def service(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        if not answers:
            return httpx.Response(503, json={"code": "spool_full"})
        return answers.pop(0)

    client = EventClient(transport=httpx.MockTransport(service), retries=1000, backoff=0.05, max_backoff=0.05,
                         batch_size=10, flush_interval=3600)  # fmt: skip
    for n in range(3):
        client.enqueue(_activity(user_id=f"u{n}"))
    with pytest.raises(IngestError, match=r"not delivered within 0\.2 s"):
        client.flush(timeout=0.2)
    assert client.pending == 3  # kept for the next flush

    results = [{"event_id": f"e{n}", "status": "accepted", "topics": ["t"]} for n in range(3)]
    answers.append(httpx.Response(202, json={"results": results}))
    flushed = client.flush()
    assert [result.status for result in flushed] == ["accepted"] * 3
    assert client.pending == 0
    assert len({request.headers["Idempotency-Key"] for request in requests}) == 1  # the same batch each time
    client.close()


async def test_async_flush_within_a_timeout_keeps_what_it_could_not_deliver() -> None:
    client = AsyncEventClient(transport=httpx.MockTransport(_unavailable_with_backoff), retries=1000, backoff=0.05,
                              max_backoff=0.05, batch_size=10, flush_interval=3600)  # fmt: skip
    for n in range(3):
        await client.enqueue(_activity(user_id=f"u{n}"))
    with pytest.raises(IngestError, match=r"not delivered within 0\.2 s"):
        await client.flush(timeout=0.2)
    assert client.pending == 3
    await client.close(timeout=0.1)  # logs the loss, does not raise
