"""Go-style durations (`10ms`, `10s`, `1m`, `1m30s`) as used by the service we replace."""

import re
from datetime import timedelta
from typing import Annotated

from pydantic import BeforeValidator, PlainSerializer

_UNIT_SECONDS = {"us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d+)?)(us|µs|ms|s|m|h)")
DURATION_HINT = "a duration such as 10ms, 10s, 1m or 1m30s"


def parse_duration(value: object) -> timedelta:
    """Parse `10ms`, `2.5s`, `1m30s`; timedeltas pass through unchanged."""
    if isinstance(value, timedelta):
        return value
    if not isinstance(value, str):
        raise ValueError(f"expected {DURATION_HINT}")
    text = value.strip()
    if text == "0":
        return timedelta(0)
    position, seconds = 0, 0.0
    for match in _PART.finditer(text):
        if match.start() != position:
            break
        seconds += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        position = match.end()
    if position == 0 or position != len(text):
        raise ValueError(f"expected {DURATION_HINT}")
    return timedelta(seconds=seconds)


def format_duration(value: timedelta) -> str:
    """Render a duration back in the same notation (milliseconds precision)."""
    millis = round(value.total_seconds() * 1000)
    if millis % 1000:
        return f"{millis}ms"
    return f"{millis // 1000}s"


Duration = Annotated[timedelta, BeforeValidator(parse_duration), PlainSerializer(format_duration)]
