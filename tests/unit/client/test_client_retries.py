"""The client's retry rules, with a fake transport at the HTTP boundary."""

from __future__ import annotations

import httpx
import pytest

from ingest_client import AsyncEventClient, EventClient, PublishStatus
from ingest_client.protocol import IngestError
from tests.conftest import activity_event, attempt


class Script:
    """Answers requests from a list, and records what was sent."""

    def __init__(self, *answers: httpx.Response | Exception) -> None:
        self.answers = list(answers)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


def _accepted(event_id: str = "0b6f1c9e-3c55-4d0f-9a43-43f1c0f6a2aa") -> httpx.Response:
    return httpx.Response(
        202, json={"event_id": event_id, "status": "accepted", "topics": ["user.activities"]}
    )


def test_429_is_retried_after_retry_after_with_the_same_idempotency_key() -> None:
    script = Script(
        httpx.Response(429, headers={"Retry-After": "0"}, json={"code": "queue_full"}), _accepted()
    )
    with EventClient(transport=httpx.MockTransport(script), backoff=0.0) as client:
        result = client.publish({"event_type": "activity", **activity_event()})

    assert result.status is PublishStatus.ACCEPTED
    assert len(script.requests) == 2
    keys = {request.headers["Idempotency-Key"] for request in script.requests}
    assert len(keys) == 1
    bodies = {request.content for request in script.requests}
    assert len(bodies) == 1  # same event_id both times


def test_a_4xx_other_than_429_is_not_retried() -> None:
    body = {"detail": [{"field": "quality", "message": "too big", "type": "x"}], "code": "validation_error",
            "retriable": False}  # fmt: skip
    script = Script(httpx.Response(422, json=body))
    with EventClient(transport=httpx.MockTransport(script)) as client:
        result = client.publish({"event_type": "attempt", **attempt()})

    assert len(script.requests) == 1
    assert result.status is PublishStatus.REJECTED
    assert result.errors[0]["field"] == "quality"
    assert not result.retriable


def test_connection_errors_are_retried_then_reported() -> None:
    failure = httpx.ConnectError("refused")
    script = Script(failure, failure, failure)
    with (
        EventClient(transport=httpx.MockTransport(script), retries=2, backoff=0.0) as client,
        pytest.raises(IngestError, match="cannot reach"),
    ):
        client.publish({"event_type": "activity", **activity_event()})
    assert len(script.requests) == 3


def test_publish_event_is_a_bool() -> None:
    script = Script(_accepted(), httpx.Response(422, json={"detail": "no", "code": "record_rejected"}))
    with EventClient(transport=httpx.MockTransport(script)) as client:
        assert client.publish_event({"event_type": "activity", **activity_event()}) is True
        assert client.publish_event({"event_type": "activity", **activity_event()}) is False


async def test_async_client_retries_503() -> None:
    script = Script(
        httpx.Response(503, headers={"Retry-After": "0"}, json={"code": "spool_full"}), _accepted()
    )
    async with AsyncEventClient(transport=httpx.MockTransport(script), backoff=0.0) as client:
        result = await client.publish({"event_type": "activity", **activity_event()})
    assert result.ok
    assert len(script.requests) == 2
