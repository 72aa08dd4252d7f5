"""Python client for the event-ingest service: typed results, retries, batching, idempotency.

from ingest_client import EventClient
with EventClient("http://127.0.0.1:8083") as client:
    client.publish_event(AttemptEvent(...))
"""

from ingest_client.client import AsyncEventClient, EventClient
from ingest_client.protocol import PublishResult, PublishStatus

__all__ = ["AsyncEventClient", "EventClient", "PublishResult", "PublishStatus"]
