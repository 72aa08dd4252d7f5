"""Failure classification: an outage may be retried, a bad record never."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError

from app.publishing.errors import DeliveryError


@pytest.mark.parametrize(
    "code",
    [
        KafkaError._MSG_TIMED_OUT,
        KafkaError._TRANSPORT,
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError.NOT_ENOUGH_REPLICAS,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.REQUEST_TIMED_OUT,
        KafkaError.PRODUCER_FENCED,
    ],
)
def test_outages_are_retriable(code: int) -> None:
    assert DeliveryError.from_kafka("t", KafkaError(code)).retriable is True


@pytest.mark.parametrize(
    "code",
    [KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.TOPIC_EXCEPTION],
)
def test_bad_records_are_permanent(code: int) -> None:
    error = DeliveryError.from_kafka("user.attempts", KafkaError(code))
    assert error.retriable is False
    assert "user.attempts" in str(error)
