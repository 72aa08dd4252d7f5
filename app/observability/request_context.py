"""The id (and the caller's trace context) of the request being served, for log lines and 5xx bodies."""

from __future__ import annotations

import logging
from contextvars import ContextVar

current_request_id: ContextVar[str | None] = ContextVar("current_request_id", default=None)
# The caller's W3C traceparent (when well formed), so logs carry its trace id even without tracing.
current_traceparent: ContextVar[str | None] = ContextVar("current_traceparent", default=None)


class RequestIdFilter(logging.Filter):
    """Adds `request_id` to every log record made while a request is served."""

    def filter(self, record: logging.LogRecord) -> bool:
        request_id = current_request_id.get()
        if request_id is not None and not hasattr(record, "request_id"):
            record.request_id = request_id
        return True
