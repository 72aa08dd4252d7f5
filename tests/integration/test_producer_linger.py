"""A send at a quiet moment goes out at once; linger.ms batches only what arrives under load.

With a linger far longer than any acknowledgement, how long a single event's request takes tells
which way it went (the bound is the linger itself, not a speed target). The first record to a
topic the producer has not seen yet waits for the topic's metadata, then for the linger, once: the
request measured is the second.
"""

from __future__ import annotations

import time

import pytest

from app.factory import create_app
from tests.conftest import SettingsFactory, activity_event, running
from tests.kafka_helpers import read_topic

pytestmark = pytest.mark.integration

LINGER_SECONDS = 2.0


@pytest.mark.parametrize("eager_below", [8, 0], ids=["eager", "always-linger"])
async def test_a_single_event_at_a_quiet_moment_does_not_wait_out_the_linger(
    make_settings: SettingsFactory, eager_below: int
) -> None:
    settings = make_settings(
        kafka_producer_batch_timeout=f"{LINGER_SECONDS:g}s",
        kafka_producer_timeout="10s",
        kafka_producer_eager_below=eager_below,
    )
    async with running(create_app(settings)) as client:
        first = await client.post("/v1/events/activities", json=activity_event())
        started = time.monotonic()
        response = await client.post("/v1/events/activities", json=activity_event())
        took = time.monotonic() - started

    assert first.status_code == response.status_code == 202  # acknowledged by Kafka either way
    if eager_below:
        assert took < LINGER_SECONDS / 2
    else:
        assert took >= LINGER_SECONDS * 0.9
    records = read_topic(settings.kafka_brokers, settings.kafka_topic_activities, expected=2)
    assert {record.headers["event_id"].decode() for record in records} == {
        first.json()["event_id"],
        response.json()["event_id"],
    }
