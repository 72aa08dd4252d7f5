"""Per-key rate limits: a token bucket per API key (or per client address when auth is off).

Tokens are events: a batch of 100 takes 100. A request larger than the bucket is let through
when the bucket is full and leaves it in debt, so a client with a small burst can still send
MAX_BATCH_EVENTS at once, just not often. Buckets live in this worker's memory: with W workers
and N instances a client may send up to W*N times the rate (set the rate accordingly).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

MAX_BUCKETS = 100_000  # bounded memory when many addresses call without auth


@dataclass(slots=True)
class TokenBucket:
    rate: float
    capacity: float
    tokens: float
    updated: float

    def take(self, count: int, now: float) -> float:
        """Take `count` tokens; 0.0 when allowed, else the seconds to wait before trying again."""
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= min(count, self.capacity):
            self.tokens -= count
            return 0.0
        return (min(count, self.capacity) - self.tokens) / self.rate


class RateLimiter:
    """Token buckets by caller; `rate` 0 switches limiting off unless a key has its own rate."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def take(self, caller: str, count: int, rate: float | None = None) -> float:
        """0.0 when `caller` may send `count` events now; else the seconds to wait (Retry-After)."""
        rate = rate or self.rate
        if rate <= 0:
            return 0.0
        now = self._clock()
        bucket = self._buckets.get(caller)
        if bucket is None or bucket.rate != rate:
            capacity = max(float(self.burst), rate)
            bucket = TokenBucket(rate, capacity, capacity, now)
            self._buckets[caller] = bucket
            if len(self._buckets) > MAX_BUCKETS:
                self._buckets.popitem(last=False)  # the least recently used caller starts afresh
        else:
            self._buckets.move_to_end(caller)
        return bucket.take(count, now)
