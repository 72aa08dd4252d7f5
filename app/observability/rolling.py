"""Counts over a sliding time window, for health checks that judge the recent past, not all time."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass(slots=True)
class _Bucket:
    started: float
    counts: dict[str, int] = field(default_factory=dict)


class RollingCounts:
    """Named counters summed over the last `window_seconds`, kept in `buckets` slices."""

    __slots__ = ("_buckets", "_clock", "_slice", "_window")

    def __init__(self, window_seconds: float, buckets: int = 30, clock: Callable[[], float] = time.monotonic):
        self._window = window_seconds
        self._slice = window_seconds / buckets
        self._buckets: deque[_Bucket] = deque()
        self._clock = clock

    def add(self, name: str, amount: int = 1) -> None:
        now = self._clock()
        if not self._buckets or now - self._buckets[-1].started >= self._slice:
            self._buckets.append(_Bucket(started=now))
        counts = self._buckets[-1].counts
        counts[name] = counts.get(name, 0) + amount

    def totals(self) -> dict[str, int]:
        horizon = self._clock() - self._window
        while self._buckets and self._buckets[0].started < horizon:
            self._buckets.popleft()
        summed: dict[str, int] = {}
        for bucket in self._buckets:
            for name, amount in bucket.counts.items():
                summed[name] = summed.get(name, 0) + amount
        return summed
