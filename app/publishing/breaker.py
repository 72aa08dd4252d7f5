"""A circuit breaker around Kafka deliveries, with pybreaker as the state machine.

pybreaker has no asyncio support of its own: `with breaker.calling(): await ...` counts what the
awaited block raises, and a lock of ours lets only one trial through while the breaker half-opens.
A delivery reports an outage by calling `failed` on what the guard yields; turning that into the
exception pybreaker counts is this module's business, not the caller's.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from datetime import timedelta

import pybreaker

from app.publishing.errors import BrokerUnavailableError

STATE_VALUES = {"closed": 0, "half-open": 1, "open": 2}


class _StateListener(pybreaker.CircuitBreakerListener):
    def __init__(self, on_change: Callable[[str], None]) -> None:
        self._on_change = on_change

    def state_change(self, cb: pybreaker.CircuitBreaker, old_state: object, new_state: object) -> None:
        self._on_change(str(getattr(new_state, "name", new_state)))


class OutageError(Exception):
    """What pybreaker counts: raised (and caught) by the guard when its delivery reported an outage."""


class Attempt:
    """One delivery under the breaker's guard."""

    __slots__ = ("outage",)

    def __init__(self) -> None:
        self.outage: str | None = None

    def failed(self, reason: str) -> None:
        """The delivery failed because Kafka is unreachable or failing: count it against the breaker."""
        self.outage = reason


class DeliveryBreaker:
    """Opens after `failure_threshold` outage failures in a row; half-opens after `reset_timeout`."""

    __slots__ = ("_breaker", "_held", "_reset_timeout", "_trial", "opened_at", "transitions")

    def __init__(
        self,
        failure_threshold: int,
        reset_timeout: timedelta,
        on_change: Callable[[str], None] | None = None,
    ) -> None:
        self._reset_timeout = reset_timeout.total_seconds()
        self.transitions: list[tuple[float, str]] = []
        self.opened_at: float | None = None

        def changed(state: str) -> None:
            self.transitions.append((time.time(), state))
            del self.transitions[:-20]
            self.opened_at = time.monotonic() if state == "open" else None
            if on_change is not None:
                on_change(state)

        self._breaker = pybreaker.CircuitBreaker(
            fail_max=failure_threshold,
            reset_timeout=self._reset_timeout,
            listeners=[_StateListener(changed)],
            exclude=[lambda error: not isinstance(error, OutageError)],
            throw_new_error_on_trip=False,
            name="kafka-delivery",
        )
        self._trial = asyncio.Lock()
        self._held = False

    @property
    def state(self) -> str:
        return str(self._breaker.current_state)

    def retry_after(self) -> float:
        """Seconds until the breaker will let a trial through (at least 1)."""
        if self.opened_at is None:
            return 1.0
        return max(1.0, self._reset_timeout - (time.monotonic() - self.opened_at))

    def rejecting(self) -> bool:
        """Open, and no trial due yet: every delivery would be refused right now."""
        if self._held:
            return True
        return self.opened_at is not None and time.monotonic() - self.opened_at < self._reset_timeout

    def hold_open(self) -> None:
        """Kafka is known unreachable (OutageRecovery's probe): open now, and no trial until
        `allow_trial` (a trial would only wait out the producer timeout)."""
        self._held = True
        if self.state != "open":
            self._breaker.open()

    def allow_trial(self) -> None:
        """Let the next delivery through as a trial now (Kafka answers again), if the breaker is open."""
        self._held = False
        if self.state == "open":
            self._breaker.half_open()

    @asynccontextmanager
    async def guard(self) -> AsyncIterator[Attempt]:
        """Run a delivery under the breaker; raise BrokerUnavailableError when it is open.

        The body calls `failed(reason)` on the yielded Attempt to count an outage. An exception
        from the body (a bad record, a cancelled request) is not the broker's fault: it passes
        through and does not count.
        """
        attempt = Attempt()
        if self.state == "closed" and not self._held:
            with self._counting(attempt):
                yield attempt
            return
        if self._held or self._trial.locked():  # a trial is already probing the broker
            raise BrokerUnavailableError("circuit breaker is open", self.retry_after())
        async with self._trial:
            with self._counting(attempt):
                yield attempt

    @contextmanager
    def _counting(self, attempt: Attempt) -> Iterator[None]:
        try:
            with self._breaker.calling():
                yield
                if attempt.outage is not None:
                    raise OutageError(attempt.outage)  # pybreaker counts what its block raises
        except OutageError:
            pass  # counted; the delivery already knows it failed
        except pybreaker.CircuitBreakerError:
            raise BrokerUnavailableError("circuit breaker is open", self.retry_after()) from None
