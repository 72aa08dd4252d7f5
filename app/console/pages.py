"""The console's pages and forms; each action calls the admin route that does it (`AdminApi`)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode

import orjson
from fastapi import APIRouter, Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from app.console.access import AdminScopeRequiredError, Viewer, console_scopes
from app.console.admin_api import AdminApi, Answer
from app.console.app import PREFIX, Console, changing, console_of
from app.console.session import COOKIE_NAME

router = APIRouter()

DLQ_PEEK = 500  # the most the admin route shows at once


def _api(request: Request, viewer: Viewer) -> AdminApi:
    # The page's request id goes with its calls: one id for the page and its admin calls in the logs.
    return AdminApi(request.app, viewer.key, request.scope.get("state", {}).get("request_id"))


def _segment(value: str) -> str:
    """A name from the page's URL or form as one path segment of an admin call: a `?`, `#` or `/` in
    it must not turn into a query, a fragment or another route."""
    return quote(value, safe="")


def _admin_page(request: Request, title: str) -> tuple[Console, Viewer]:
    """The console and viewer of a page only admin keys see; a metrics key gets a 403 page."""
    console = console_of(request)
    viewer = console.viewer(request)
    if not viewer.is_admin:
        raise AdminScopeRequiredError(viewer, title)
    return console, viewer


async def _form(request: Request) -> dict[str, str]:
    form = await request.form()
    return {name: value for name, value in form.items() if isinstance(value, str)}


def _parse_json(text: str, what: str) -> tuple[Any, str | None]:
    try:
        return orjson.loads(text), None
    except orjson.JSONDecodeError as exc:
        return None, f"{what} is not JSON: {exc}"


# --- Login -----------------------------------------------------------------------------------------


@router.get("/login")
async def login_page(request: Request) -> Response:
    console = console_of(request)
    if not console.runtime.settings.auth_enabled:
        return RedirectResponse(PREFIX, status_code=303)
    return console.page(request, "login.html", None, title="Log in")


@router.post("/login")
async def login(request: Request) -> Response:
    console = console_of(request)
    origin = request.headers.get("origin")
    if origin is not None and origin != f"{request.url.scheme}://{request.url.netloc}":
        return HTMLResponse("Refused: login from another site.", status_code=403)
    raw = (await _form(request)).get("api_key", "").strip()
    key = console.runtime.keys.lookup(raw) if raw else None
    if key is None or key.revoked:
        return console.page(
            request, "login.html", None, 401, title="Log in", error="Unknown or revoked API key."
        )
    if not console_scopes(key.scopes):
        return console.page(
            request,
            "login.html",
            None,
            403,
            title="Log in",
            error=f"Key {key.name!r} has neither the admin nor the metrics scope.",
        )
    response = RedirectResponse(PREFIX, status_code=303)
    response.set_cookie(
        COOKIE_NAME,
        console.sessions.seal(raw),
        max_age=int(console.sessions.ttl_seconds),
        path=PREFIX,
        httponly=True,
        secure=request.url.scheme == "https",
        samesite="strict",
    )
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    await changing(request)
    response = RedirectResponse(f"{PREFIX}/login", status_code=303)
    response.delete_cookie(COOKIE_NAME, path=PREFIX)
    return response


# --- Overview --------------------------------------------------------------------------------------


@router.get("")
async def overview(request: Request) -> Response:
    console = console_of(request)
    viewer = console.viewer(request)
    return console.page(request, "overview.html", viewer, title="Overview", **await _live(request, viewer))


@router.get("/overview/live")
async def overview_live(request: Request) -> Response:
    console = console_of(request)
    viewer = console.viewer(request)
    return console.page(request, "overview_live.html", viewer, **await _live(request, viewer))


async def _live(request: Request, viewer: Viewer) -> dict[str, Any]:
    console = console_of(request)
    api = _api(request, viewer)
    metrics = await api.get("/metrics/publisher")
    health = await api.get("/metrics/publisher/health")
    ready = await api.get("/readyz")
    latest = (
        await console.sample_of(metrics.body)
        if metrics.ok and isinstance(metrics.body, dict)
        else await console.sample()
    )
    points = console.history.rates(latest)
    p50, p99 = console.history.latency(latest)
    return {
        "metrics": metrics.body if metrics.ok else None,
        "metrics_error": None if metrics.ok else metrics.error,
        "health": health.body if isinstance(health.body, dict) else None,
        "ready": ready.body if isinstance(ready.body, dict) else None,
        "ready_ok": ready.ok,
        "rates": points[-1][1] if points else {},
        "points": points,
        "p50_ms": None if p50 is None else p50 * 1000,
        "p99_ms": None if p99 is None else p99 * 1000,
        "totals": latest.counts,
    }


# --- Routing rules ---------------------------------------------------------------------------------

RULE_EXAMPLE = {
    "id": "videos",
    "name": "Videos watched",
    "event_types": ["activity"],
    "condition": {"field": "activity_type", "op": "==", "value": "video_watched"},
    "topics": ["user.activities"],
}


def _test_example() -> dict[str, Any]:
    return {
        "event_type": "attempt",
        "user_id": "user-42",
        "occurred_at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "item_id": "item-17",
        "session_id": "session-9",
        "correct": True,
        "quality": 5,
        "time_taken_ms": 5300,
    }


PAGE_SIZE = 200  # rows a list page shows at first; "show more" adds as many


@dataclass(frozen=True, slots=True)
class Listing:
    """The rows of a long list that match the page's filter (`q`), the first `limit` of them shown."""

    rows: list[dict[str, Any]]
    matching: int
    query: str
    limit: int
    page_size: int = PAGE_SIZE


def _listing(request: Request, items: list[dict[str, Any]], fields: tuple[str, ...]) -> Listing:
    """Filter `items` by the `q` parameter (a case-insensitive substring of any of `fields`, lists
    included) and keep the first `limit` (at least one page)."""
    query = request.query_params.get("q", "").strip()
    try:
        limit = max(PAGE_SIZE, int(request.query_params.get("limit", PAGE_SIZE)))
    except ValueError:
        limit = PAGE_SIZE
    wanted = query.lower()

    def text(item: dict[str, Any]) -> str:
        values = (item.get(name) for name in fields)
        return " ".join(
            " ".join(map(str, v)) if isinstance(v, list) else str(v or "") for v in values
        ).lower()

    matching = [item for item in items if wanted in text(item)] if wanted else items
    return Listing(matching[:limit], len(matching), query, limit)


@router.get("/rules")
async def rules(request: Request) -> Response:
    return await _rules_page(request)


@router.get("/rules/{rule_id}/edit")
async def edit_rule(request: Request, rule_id: str) -> Response:
    """A rule's edit form (a fragment, fetched when its Edit is opened: thousands of rules stay light)."""
    console, viewer = _admin_page(request, "Routing rules")
    answer = await _api(request, viewer).get(f"/admin/routing-rules/{_segment(rule_id)}")
    return console.page(
        request,
        "rule_edit.html",
        viewer,
        rule=answer.body if answer.ok else None,
        error=None if answer.ok else answer.error,
    )


async def _rules_page(
    request: Request, *, status_code: int = 200, message: str | None = None, error: str | None = None,
    draft: str | None = None,
) -> Response:  # fmt: skip
    console, viewer = _admin_page(request, "Routing rules")
    answer = await _api(request, viewer).get("/admin/routing-rules")
    rows = answer.body["rules"] if answer.ok else []
    return console.page(
        request,
        "rules.html",
        viewer,
        status_code=status_code,
        title="Routing rules",
        rule_set=answer.body if answer.ok else None,
        listing=_listing(request, rows, ("id", "name", "event_types", "topics")),
        load_error=None if answer.ok else answer.error,
        message=message,
        error=error,
        draft=draft or orjson.dumps(RULE_EXAMPLE, option=orjson.OPT_INDENT_2).decode(),
        test_draft=orjson.dumps(_test_example(), option=orjson.OPT_INDENT_2).decode(),
    )


@router.post("/rules")
async def save_rule(request: Request) -> Response:
    """Create (POST) or, with `replace`, create-or-replace (PUT) a rule from its JSON."""
    viewer = await changing(request)
    form = await _form(request)
    draft = form.get("rule", "")
    rule, problem = _parse_json(draft, "The rule")
    if problem is None and not isinstance(rule, dict):
        problem = "The rule must be a JSON object."
    if problem is not None:
        return await _rules_page(request, status_code=422, error=problem, draft=draft)
    api = _api(request, viewer)
    if form.get("replace") and isinstance(rule.get("id"), str):
        answer = await api.call("PUT", f"/admin/routing-rules/{_segment(rule['id'])}", json=rule)
    else:
        answer = await api.call("POST", "/admin/routing-rules", json=rule)
    if not answer.ok:
        return await _rules_page(request, status_code=answer.status, error=answer.error, draft=draft)
    return await _rules_page(request, message=f"Rule {rule.get('id')!s} saved.")


@router.post("/rules/{rule_id}/enabled")
async def set_rule_enabled(request: Request, rule_id: str) -> Response:
    viewer = await changing(request)
    enabled = (await _form(request)).get("enabled") == "true"
    answer = await _api(request, viewer).call(
        "PATCH", f"/admin/routing-rules/{_segment(rule_id)}", json={"enabled": enabled}
    )
    if not answer.ok:
        return await _rules_page(request, status_code=answer.status, error=answer.error)
    return await _rules_page(request, message=f"Rule {rule_id} {'enabled' if enabled else 'disabled'}.")


@router.post("/rules/{rule_id}/delete")
async def delete_rule(request: Request, rule_id: str) -> Response:
    viewer = await changing(request)
    answer = await _api(request, viewer).call("DELETE", f"/admin/routing-rules/{_segment(rule_id)}")
    if not answer.ok:
        return await _rules_page(request, status_code=answer.status, error=answer.error)
    return await _rules_page(request, message=f"Rule {rule_id} deleted.")


@router.post("/rules/test")
async def test_event(request: Request) -> Response:
    """The test panel: what routing would do with an event (a fragment)."""
    viewer = await changing(request)
    event, problem = _parse_json((await _form(request)).get("event", ""), "The event")
    answer = (
        Answer(422, {"detail": problem})
        if problem is not None
        else await _api(request, viewer).call("POST", "/admin/routing-rules/test", json={"event": event})
    )
    return console_of(request).page(
        request,
        "rule_test.html",
        viewer,
        result=answer.body if answer.ok else None,
        error=None if answer.ok else answer.error,
    )


# --- Event types -----------------------------------------------------------------------------------


@router.get("/event-types")
async def event_types(request: Request) -> Response:
    return await _event_types_page(request)


async def _event_types_page(
    request: Request, *, status_code: int = 200, message: str | None = None, error: str | None = None,
    draft: str | None = None,
) -> Response:  # fmt: skip
    console, viewer = _admin_page(request, "Event types")
    answer = await _api(request, viewer).get("/admin/event-types")
    return console.page(
        request,
        "event_types.html",
        viewer,
        status_code=status_code,
        title="Event types",
        registry=answer.body if answer.ok else None,
        listing=_listing(
            request, answer.body["event_types"] if answer.ok else [], ("name", "description", "owner")
        ),
        load_error=None if answer.ok else answer.error,
        message=message,
        error=error,
        draft=draft or orjson.dumps(EVENT_TYPE_EXAMPLE, option=orjson.OPT_INDENT_2).decode(),
    )


EVENT_TYPE_EXAMPLE = {
    "name": "workflow.paused",
    "description": "a workflow run was paused",
    "owner": "platform-team",
    "schema": {
        "type": "object",
        "properties": {"workflow_id": {"type": "string"}, "reason": {"type": "string"}},
        "required": ["workflow_id"],
    },
    "partition_key": "workflow_id",
}


@router.post("/event-types")
async def register_event_type(request: Request) -> Response:
    viewer = await changing(request)
    draft = (await _form(request)).get("definition", "")
    definition, problem = _parse_json(draft, "The definition")
    if problem is not None:
        return await _event_types_page(request, status_code=422, error=problem, draft=draft)
    answer = await _api(request, viewer).call("POST", "/admin/event-types", json=definition)
    if not answer.ok:
        return await _event_types_page(request, status_code=answer.status, error=answer.error, draft=draft)
    return await _event_types_page(request, message=f"Event type {answer.body.get('name')} registered.")


@router.get("/event-types/{name}")
async def event_type(request: Request, name: str) -> Response:
    return await _event_type_page(request, name)


async def _event_type_page(
    request: Request, name: str, *, status_code: int = 200, message: str | None = None,
    error: str | None = None, draft: str | None = None, compare: int | None = None,
) -> Response:  # fmt: skip
    console, viewer = _admin_page(request, "Event types")
    api = _api(request, viewer)
    answer = await api.get(f"/admin/event-types/{_segment(name)}")
    if not answer.ok:
        return console.page(request, "message.html", viewer, answer.status, title=name, error=answer.error)
    view = answer.body
    versions = view.get("versions") or [view.get("version", 1)]
    latest = max(versions)
    other = compare if compare in versions else (latest - 1 if latest - 1 in versions else None)
    older = await api.get(f"/admin/event-types/{_segment(name)}/versions/{other}") if other else None
    return console.page(
        request,
        "event_type.html",
        viewer,
        status_code=status_code,
        title=name,
        view=view,
        versions=versions,
        latest=latest,
        other=other,
        other_schema=older.body.get("schema") if older is not None and older.ok else None,
        message=message,
        error=error,
        draft=draft or orjson.dumps(view.get("schema"), option=orjson.OPT_INDENT_2).decode(),
    )


@router.get("/event-types/{name}/compare")
async def compare_versions(request: Request, name: str, version: int) -> Response:
    return await _event_type_page(request, name, compare=version)


@router.post("/event-types/{name}/schema")
async def evolve_event_type(request: Request, name: str) -> Response:
    viewer = await changing(request)
    draft = (await _form(request)).get("schema", "")
    schema, problem = _parse_json(draft, "The schema")
    if problem is not None:
        return await _event_type_page(request, name, status_code=422, error=problem, draft=draft)
    answer = await _api(request, viewer).call(
        "PUT", f"/admin/event-types/{_segment(name)}/schema", json=schema
    )
    if not answer.ok:
        return await _event_type_page(
            request, name, status_code=answer.status, error=answer.error, draft=draft
        )
    return await _event_type_page(
        request, name, message=f"Version {answer.body.get('version')} registered: compatible."
    )


# --- Topics ----------------------------------------------------------------------------------------


@router.get("/topics")
async def topics(request: Request, group: str = "") -> Response:
    """The page at once; its table comes from `/topics/table` (Kafka answers in its own time)."""
    console, viewer = _admin_page(request, "Topics")
    lag = (
        await _api(request, viewer).get(f"/admin/consumer-groups/{_segment(group)}/lag")
        if group.strip()
        else None
    )
    return console.page(
        request,
        "topics.html",
        viewer,
        title="Topics",
        group=group,
        lag=lag.body if lag is not None and lag.ok else None,
        lag_error=lag.error if lag is not None and not lag.ok else None,
    )


@router.get("/topics/table")
async def topics_table(request: Request) -> Response:
    console, viewer = _admin_page(request, "Topics")
    answer = await _api(request, viewer).get("/admin/topics")
    return console.page(
        request,
        "topics_table.html",
        viewer,
        topics=answer.body.get("topics", []) if answer.ok else [],
        load_error=None if answer.ok else answer.error,
    )


# --- Dead letters ----------------------------------------------------------------------------------


@router.get("/dlq")
async def dead_letters(
    request: Request, reason: str = "", original_topic: str = "", since: str = "", until: str = ""
) -> Response:
    return await _dlq_page(
        request, {"reason": reason, "original_topic": original_topic, "since": since, "until": until}
    )


async def _dlq_page(
    request: Request, filters: dict[str, str], *, status_code: int = 200, replay: Any = None,
    error: str | None = None,
) -> Response:  # fmt: skip
    """The page at once; the records come from `/dlq/records` (reading them takes a Kafka consumer)."""
    console, viewer = _admin_page(request, "Dead letters")
    return console.page(
        request,
        "dlq.html",
        viewer,
        status_code=status_code,
        title="Dead letters",
        filters=filters,
        query=urlencode({name: value for name, value in filters.items() if value}),
        replay=replay,
        error=error,
    )


@router.get("/dlq/records")
async def dead_letter_records(
    request: Request, reason: str = "", original_topic: str = "", since: str = "", until: str = ""
) -> Response:
    console, viewer = _admin_page(request, "Dead letters")
    filters = {"reason": reason, "original_topic": original_topic, "since": since, "until": until}
    answer = await _api(request, viewer).get("/admin/dlq", limit=DLQ_PEEK)
    records = answer.body.get("records", []) if answer.ok else []
    return console.page(
        request,
        "dlq_records.html",
        viewer,
        topic=answer.body.get("topic") if answer.ok else None,
        records=[record for record in records if _dlq_matches(record, filters)],
        total=len(records),
        peek=DLQ_PEEK,
        load_error=None if answer.ok else answer.error,
    )


def _dlq_matches(record: dict[str, Any], filters: dict[str, str]) -> bool:
    """The replay route's filter, applied to what is shown: reason (substring), original topic,
    dead-lettering time in [since, until)."""
    if filters.get("reason") and filters["reason"].lower() not in str(record.get("dlq_reason", "")).lower():
        return False
    if filters.get("original_topic") and record.get("original_topic") != filters["original_topic"]:
        return False
    stamp = _moment(str(record.get("dlq_timestamp") or ""))
    since, until = _moment(filters.get("since", "")), _moment(filters.get("until", ""))
    if stamp is not None and since is not None and stamp < since:
        return False
    return not (stamp is not None and until is not None and stamp >= until)


def _moment(text: str) -> float | None:
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:  # the browser's datetime-local field: UTC, as the page says
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


@router.post("/dlq/replay")
async def replay_dead_letters(request: Request) -> Response:
    """Replay what the filter selects; `dry_run` counts first, and the page offers the real run."""
    viewer = await changing(request)
    form = await _form(request)
    filters = {name: form.get(name, "") for name in ("reason", "original_topic", "since", "until")}
    body: dict[str, Any] = {"dry_run": form.get("dry_run") == "true"}
    for name, value in filters.items():
        if value:
            body[name] = value if name not in ("since", "until") or value.endswith("Z") else value + "Z"
    if form.get("event_type"):
        body["event_type"] = form["event_type"]
    answer = await _api(request, viewer).call("POST", "/admin/dlq/replay", json=body)
    if not answer.ok:
        return await _dlq_page(request, filters, status_code=answer.status, error=answer.error)
    return await _dlq_page(request, filters, replay=answer.body)


# --- API keys and the audit trail ------------------------------------------------------------------


@router.get("/keys")
async def keys(request: Request) -> Response:
    return await _keys_page(request)


async def _keys_page(
    request: Request, *, status_code: int = 200, created: Any = None, message: str | None = None,
    error: str | None = None,
) -> Response:  # fmt: skip
    console, viewer = _admin_page(request, "API keys")
    answer = await _api(request, viewer).get("/admin/api-keys")
    return console.page(
        request,
        "keys.html",
        viewer,
        status_code=status_code,
        title="API keys",
        keys=answer.body if answer.ok else [],
        load_error=None if answer.ok else answer.error,
        created=created,
        message=message,
        error=error,
    )


@router.post("/keys")
async def create_key(request: Request) -> Response:
    viewer = await changing(request)
    form = await request.form()
    body: dict[str, Any] = {
        "name": str(form.get("name", "")),
        "scopes": [str(scope) for scope in form.getlist("scopes")],
    }
    event_types = str(form.get("event_types", "")).strip()
    if event_types:
        body["event_types"] = [name.strip() for name in event_types.split(",") if name.strip()]
    answer = await _api(request, viewer).call("POST", "/admin/api-keys", json=body)
    if not answer.ok:
        return await _keys_page(request, status_code=answer.status, error=answer.error)
    return await _keys_page(request, created=answer.body)


@router.post("/keys/{key_id}/revoke")
async def revoke_key(request: Request, key_id: str) -> Response:
    viewer = await changing(request)
    answer = await _api(request, viewer).call("DELETE", f"/admin/api-keys/{_segment(key_id)}")
    if not answer.ok:
        return await _keys_page(request, status_code=answer.status, error=answer.error)
    return await _keys_page(request, message=f"Key {key_id} revoked.")


@router.get("/audit")
async def audit(request: Request, action: str = "", before_id: int | None = None) -> Response:
    console, viewer = _admin_page(request, "Audit trail")
    answer = await _api(request, viewer).get("/admin/audit", action=action, before_id=before_id, limit=100)
    return console.page(
        request,
        "audit.html",
        viewer,
        title="Audit trail",
        page=answer.body if answer.ok else None,
        load_error=None if answer.ok else answer.error,
        action=action,
    )
