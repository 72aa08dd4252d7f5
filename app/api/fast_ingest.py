"""`POST /v1/events/{attempts,sessions,placements,activities}`: the ordinary request in one coroutine.

Through the full stack, a single event passed three of FastAPI's middlewares, the service's four
(request id, HTTP metrics, load shedding, authentication), Starlette's exception middleware and
router, and FastAPI's request handling: a fifth of the instructions a single event costs in the
worker's main thread, for layers that each do a few lookups on this path. `FastIngestPath` does
what those layers do for the ordinary request (an authorised key, a plain JSON body within the
limit, a valid event, a free slot in the worker, tracing off) with the same code: the same request
id and metrics, the same slots against MAX_CONCURRENT_REQUESTS, the same key lookup, body parser,
model, rate limit, ingest call and answers. Every other request goes to the full stack untouched
(with the body read so far handed on), so each refusal (401, 403, 413, 415, 422, 503 overloaded,
...) is answered by the code that always answered it, a request that finds no slot free waits in
the full stack's queue, and the OpenAPI schema still describes these routes.
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable

import orjson
from fastapi import HTTPException
from pydantic import ValidationError
from starlette.types import Message, Receive, Scope, Send

from app.api.auth import presented_key
from app.api.errors import internal_error
from app.api.events import answer_single, refusal
from app.api.ingest_options import ACK_LEVELS, MAX_IDEMPOTENCY_KEY_LENGTH
from app.api.json_body import parse_json
from app.api.load_shedding import SLOT_HELD, IngestSlots
from app.api.request_body import is_json_media_type
from app.api.request_id import HEADER as REQUEST_ID_HEADER
from app.api.request_id import client_ids
from app.config.settings import Settings
from app.observability.http_metrics import HttpMetrics
from app.observability.request_context import current_request_id, current_traceparent
from app.runtime import Runtime
from app.security.keys import ANONYMOUS, ApiKey
from app.security.keys import Scope as KeyScope
from event_models.models import ActivityEvent, AttemptEvent, BaseEvent, PlacementEvent, SessionEvent
from event_models.outcomes import EventStatus

ASGIHandler = Callable[[Scope, Receive, Send], Awaitable[None]]

ROUTES: dict[str, type[BaseEvent]] = {
    "/v1/events/attempts": AttemptEvent,
    "/v1/events/sessions": SessionEvent,
    "/v1/events/placements": PlacementEvent,
    "/v1/events/activities": ActivityEvent,
}
# The headers this path reads; any of them sent twice, and the full stack decides.
_READ = frozenset(
    {
        b"authorization",
        b"x-api-key",
        b"content-type",
        b"content-encoding",
        b"content-length",
        b"idempotency-key",
        b"x-request-id",
        b"traceparent",
    }
)
_KEY_HEADERS = (b"authorization", b"x-api-key")
_QUERIES = {b"": None, **{f"ack={level}".encode(): level for level in ACK_LEVELS}}
_JSON = b"application/json"


class FastIngestPath:
    """Serves the ordinary single-event request; hands any other to `full` (the app's whole stack)."""

    def __init__(
        self,
        full: ASGIHandler,
        runtime: Runtime,
        settings: Settings,
        slots: IngestSlots,
        http_metrics: HttpMetrics,
    ) -> None:
        self.full = full
        self.runtime = runtime
        self.slots = slots
        self.http_metrics = http_metrics
        self.auth_enabled = settings.auth_enabled
        self.max_bytes = settings.max_request_bytes
        self.default_ack = settings.ack_level
        drop_unknown = settings.unknown_fields == "ignore"
        self.known_fields = {
            path: frozenset(model.__pydantic_fields__) if drop_unknown else None
            for path, model in ROUTES.items()
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        path: str = scope["path"]
        query = scope["query_string"]
        headers: dict[bytes, bytes] = {}
        for name, value in scope["headers"]:
            if name in _READ:
                if name in headers:
                    return await self.full(scope, receive, send)
                headers[name] = value
        key = self._key(headers)
        if (
            key is None
            or query not in _QUERIES
            or self.runtime.tracing.enabled  # the tracing middleware opens the request's span
            or not _plain_json(headers, self.max_bytes)
            or len(headers.get(b"idempotency-key", b"")) > MAX_IDEMPOTENCY_KEY_LENGTH
            or not self.slots.take_now()  # last: it takes the slot (the full stack queues for one)
        ):
            return await self.full(scope, receive, send)

        try:
            body, rest = await _read_body(receive, self.max_bytes)
            event = None if rest is not None else self._event(path, body, key)
            if event is None:
                # Answered by the full stack, in this slot: with its body read, the request must
                # not wait in the queue for another.
                scope[SLOT_HELD] = True
                rest = rest or [{"type": "http.request", "body": body, "more_body": False}]
                return await self.full(scope, _replay(rest, receive), send)
            await self._ingest(scope, send, event, key, headers, _QUERIES[query], started)
        finally:
            self.slots.release()

    def _key(self, headers: dict[bytes, bytes]) -> ApiKey | None:
        """The caller's key when it may ingest (ANONYMOUS with authentication off); else None."""
        if not self.auth_enabled:
            return ANONYMOUS
        raw = presented_key([(name, value) for name, value in headers.items() if name in _KEY_HEADERS])
        key = self.runtime.keys.lookup(raw) if raw is not None else None
        if key is None or key.revoked or KeyScope.INGEST not in key.scopes:
            return None
        return key

    def _event(self, path: str, body: bytes, key: ApiKey) -> BaseEvent | None:
        """The valid event the caller may post; None for anything the full stack must answer."""
        if not body:
            return None
        try:
            data = parse_json(body)
        except (ValueError, HTTPException):  # 400/422: answered by the full stack, which parses it again
            return None
        known = self.known_fields[path]
        if known is not None and isinstance(data, dict):
            data = {name: value for name, value in data.items() if name in known}
        try:
            event = ROUTES[path].model_validate(data)
        except ValidationError:
            return None
        return event if key.may_post(event.event_type) else None

    async def _ingest(
        self,
        scope: Scope,
        send: Send,
        event: BaseEvent,
        key: ApiKey,
        headers: dict[bytes, bytes],
        ack: str | None,
        started: float,
    ) -> None:
        runtime = self.runtime
        request_id, traceparent = client_ids(
            [(name, headers[name]) for name in (REQUEST_ID_HEADER, b"traceparent") if name in headers]
        )
        request_id = request_id or os.urandom(8).hex()
        id_token = current_request_id.set(request_id)
        trace_token = current_traceparent.set(traceparent)
        encoded_id = request_id.encode()
        status = 500
        answered = False
        idempotency_key = headers.get(b"idempotency-key")

        async def send_with_id(message: Message) -> None:
            nonlocal status, answered
            if message["type"] == "http.response.start":
                status, answered = message["status"], True
                message["headers"] = [*message.get("headers", ()), (REQUEST_ID_HEADER, encoded_id)]
            await send(message)

        try:
            refused = refusal(runtime, key, scope.get("client"), 1)
            if refused is not None:
                return await refused(scope, _no_body, send_with_id)
            outcome = await runtime.ingest.ingest_one(
                event,
                None if idempotency_key is None else idempotency_key.decode("latin-1"),
                traceparent,
                ack or self.default_ack,  # type: ignore[arg-type]  # one of ACK_LEVELS
            )
            if outcome.failure is not None or outcome.validation_errors is not None:
                return await answer_single(outcome)(scope, _no_body, send_with_id)
            body = orjson.dumps(
                {"event_id": outcome.event_id, "status": outcome.status, "topics": outcome.topics}
            )
            await send_with_id(
                {
                    "type": "http.response.start",
                    "status": 200 if outcome.status == EventStatus.DUPLICATE else 202,
                    "headers": [(b"content-length", str(len(body)).encode()), (b"content-type", _JSON)],
                }
            )
            await send({"type": "http.response.body", "body": body})
        except Exception:
            if answered:  # nothing more can be said to the client
                raise
            status = 500  # the answer carries the request id already
            await internal_error(scope["path"], request_id)(scope, _no_body, send)
        finally:
            self.http_metrics.observe(scope["path"], "POST", status, time.perf_counter() - started)
            current_request_id.reset(id_token)
            current_traceparent.reset(trace_token)


def _plain_json(headers: dict[bytes, bytes], max_bytes: int) -> bool:
    """A JSON body, not encoded, whose declared length (if any) is within the limit."""
    media_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
    declared = headers.get(b"content-length", b"0")
    return (
        is_json_media_type(media_type.decode("latin-1"))
        and headers.get(b"content-encoding", b"identity").strip().lower() in (b"identity", b"")
        and declared.isdigit()
        and int(declared) <= max_bytes
    )


async def _read_body(receive: Receive, max_bytes: int) -> tuple[bytes, list[Message] | None]:
    """The whole body, and None; or, when it is over the limit or the client left, the messages
    that hand what was read on to the full stack."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":  # the client left
            return b"", [{"type": "http.request", "body": b"".join(chunks), "more_body": True}, message]
        chunk = message.get("body", b"")
        size += len(chunk)
        chunks.append(chunk)
        more = message.get("more_body", False)
        if size > max_bytes:
            return b"", [{"type": "http.request", "body": b"".join(chunks), "more_body": more}]
        if not more:
            return b"".join(chunks), None


def _replay(messages: list[Message], receive: Receive) -> Receive:
    """A `receive` that gives `messages` first, then reads on from the client."""
    pending = list(messages)

    async def replay() -> Message:
        return pending.pop(0) if pending else await receive()

    return replay


async def _no_body() -> Message:
    """The request body is read already: a response that asks for more (to watch for a
    disconnect) learns nothing new."""
    return {"type": "http.request", "body": b"", "more_body": False}


def routed_here(scope: Scope) -> bool:
    """Whether `FastIngestPath` takes this request at all (before looking into it)."""
    return scope["type"] == "http" and scope["method"] == "POST" and scope["path"] in ROUTES
