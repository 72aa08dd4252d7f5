"""Event times the service believes: not too far in the future, not too old.

A clock set years off, or a replay of ancient data through the live API, would otherwise land in
every consumer's window computations. Both bounds are settings (EVENT_MAX_FUTURE_SKEW,
EVENT_MAX_AGE); zero switches one off.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from app.config.durations import format_duration
from event_models.models import BaseEvent

_EARLIEST = datetime.min.replace(tzinfo=UTC)
_LATEST = datetime.max.replace(tzinfo=UTC)


class EventTimeWindow:
    def __init__(self, max_age: timedelta, max_future_skew: timedelta) -> None:
        self.max_age = max_age
        self.max_future_skew = max_future_skew

    def bounds(self, now: datetime) -> tuple[datetime, datetime]:
        """The earliest and latest acceptable `occurred_at` at `now` (compared once per event)."""
        earliest = now - self.max_age if self.max_age else _EARLIEST
        latest = now + self.max_future_skew if self.max_future_skew else _LATEST
        return earliest, latest

    def problems(self, event: BaseEvent, now: datetime | None = None) -> list[dict[str, Any]] | None:
        """Validation errors (the shape describe_errors gives) for `occurred_at`; None when fine."""
        earliest, latest = self.bounds(now or datetime.now(UTC))
        occurred = event.occurred_at
        if occurred > latest:
            message = f"must not be more than {_readable(self.max_future_skew)} in the future"
        elif occurred < earliest:
            message = f"must not be more than {_readable(self.max_age)} in the past"
        else:
            return None
        return [{"field": "occurred_at", "message": message, "type": "time_window"}]


def _readable(value: timedelta) -> str:
    if value.days and not value.seconds and not value.microseconds:
        return f"{value.days} day{'s' if value.days > 1 else ''}"
    return format_duration(value)
