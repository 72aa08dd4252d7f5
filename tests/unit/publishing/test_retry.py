"""Backoff: exponential from the initial delay, capped, with bounded jitter."""

from __future__ import annotations

import pytest

from app.publishing.retry import RetryPolicy


def test_delays_grow_exponentially_up_to_the_cap() -> None:
    policy = RetryPolicy(retries=10, initial_delay=0.1, max_delay=5.0, factor=2.0, jitter=0.0)
    assert [policy.delay(n) for n in range(1, 9)] == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0])


def test_jitter_stays_within_its_fraction() -> None:
    policy = RetryPolicy(retries=3, initial_delay=1.0, max_delay=5.0, factor=2.0, jitter=0.2)
    delays = [policy.delay(1) for _ in range(200)]
    assert all(0.8 <= delay <= 1.2 for delay in delays)
    assert len(set(delays)) > 1
