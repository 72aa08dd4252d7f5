"""Exponential backoff with jitter, for outages only (a bad record is never retried)."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """`retries` further attempts after the first, waiting initial·factor^n (capped) ± jitter."""

    retries: int
    initial_delay: float
    max_delay: float
    factor: float
    jitter: float

    def delay(self, attempt: int) -> float:
        """Seconds to wait before attempt number `attempt` (1 = first retry)."""
        base = min(self.max_delay, self.initial_delay * self.factor ** max(0, attempt - 1))
        spread = base * self.jitter
        return max(0.0, base + random.uniform(-spread, spread))
