"""The words the service answers with, for the service and its clients alike: what happened to an
event (`status`) and, when it was not taken, why (`code`)."""

from __future__ import annotations

from enum import StrEnum


class EventStatus(StrEnum):
    """What happened to one event; every status but `rejected` means the service took it."""

    ACCEPTED = "accepted"  # Kafka acknowledged it
    SPOOLED = "spooled"  # durable in the service's spool; the relay delivers it
    UNROUTED = "unrouted"  # valid, but no routing rule matched: published nowhere
    DUPLICATE = "duplicate"  # a repeat of an event already taken: the first answer again
    REJECTED = "rejected"  # not taken: see the failure code


class FailureCode(StrEnum):
    """Why an event was not taken (the `code` in error bodies and batch items)."""

    VALIDATION_ERROR = "validation_error"
    QUEUE_FULL = "queue_full"
    SPOOL_FULL = "spool_full"
    SPOOL_UNAVAILABLE = "spool_unavailable"
    RECORD_REJECTED = "record_rejected"
    FORBIDDEN = "forbidden"  # the caller's API key may not post this event type
    RATE_LIMITED = "rate_limited"
