"""The words the service answers with are defined once (event_models.outcomes) and used everywhere."""

from __future__ import annotations

from typing import get_args

from app.api import events, schemas
from event_models.outcomes import EventStatus, FailureCode
from ingest_client import PublishStatus


def test_the_openapi_schema_lists_exactly_the_shared_statuses() -> None:
    assert set(get_args(schemas.ItemStatus)) == set(EventStatus)
    taken = get_args(schemas.EventAccepted.model_fields["status"].annotation)
    assert set(taken) == set(EventStatus) - {EventStatus.REJECTED}


def test_the_client_speaks_the_same_words() -> None:
    assert PublishStatus is EventStatus


def test_every_failure_code_has_an_http_status() -> None:
    assert set(events._FAILURE_STATUS) == set(FailureCode) - {FailureCode.VALIDATION_ERROR}
    assert events.STATUS_WORDS == ("accepted", "spooled", "unrouted", "duplicate", "rejected")
    assert all(type(word) is str for word in events.STATUS_WORDS)  # plain keys for orjson
