"""`/admin/routing-rules`: list, create, replace, patch, delete and dry-run routing rules.

Changes are validated (model, templates, topic governance, unique ids) before they take effect,
written to the database with a new version, applied here at once and by every other worker and
instance at its next poll.
"""

from __future__ import annotations

import os
from typing import Any

from fastapi import APIRouter, HTTPException
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field, ValidationError
from starlette.responses import Response

from app.api.dependencies import ActorDep, RuntimeDep
from app.api.request_body import ADMIN_MAX_BYTES, BODY_RESPONSES, limited_body_route
from app.api.responses import JsonResponse
from app.api.schemas import ErrorBody
from app.audit.trail import Actor
from app.routing import templates
from app.routing.router import Router
from app.routing.rules import RoutingRule
from app.routing.templates import BUILTIN_NAMES
from app.runtime import MissingTopicsError, Runtime, TopicsUnavailableError
from event_models.models import AnyEvent

router = APIRouter(
    prefix="/admin/routing-rules",
    tags=["admin: routing rules"],
    route_class=limited_body_route(ADMIN_MAX_BYTES),
    responses=BODY_RESPONSES,
)

ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "No rule with this id."},
    422: {
        "model": ErrorBody,
        "description": "Invalid rule, unknown template variable, forbidden topic, or (KAFKA_CREATE_TOPICS=false) "
        "a topic that does not exist.",
    },
    503: {"model": ErrorBody, "description": "Kafka did not answer: the rule's topics could not be checked."},
}


class RuleSet(BaseModel):
    """All rules in evaluation order, the version of the set, and the worker that answered."""

    version: int
    worker_pid: int
    rules: list[RoutingRule]


class RuleTest(BaseModel):
    """An event to route without publishing it."""

    event: AnyEvent = Field(description="An event object with its `event_type`, as in a batch.")


def _rule_set(runtime: Runtime) -> dict[str, Any]:
    return {
        "version": runtime.rules.version,
        "worker_pid": os.getpid(),  # with several workers: which one answered, at which version
        "rules": [rule.model_dump(mode="json") for rule in runtime.router.rules],
    }


def _find(runtime: Runtime, rule_id: str) -> RoutingRule:
    for rule in runtime.router.rules:
        if rule.id == rule_id:
            return rule
    raise HTTPException(404, f"no routing rule {rule_id!r}")


def _invalid(message: str, field: str = "(body)") -> RequestValidationError:
    return RequestValidationError([{"loc": ("body", field), "msg": message, "type": "value_error"}])


async def _save(runtime: Runtime, rule: RoutingRule, actor: Actor) -> bool:
    """Check the rule's event types and topics (governance, existence), then save it: True when it is new."""
    unregistered = [
        name
        for name in rule.event_types
        if name not in BUILTIN_NAMES and runtime.event_types.get(name) is None
    ]
    if unregistered:
        raise _invalid(f"no event type {', '.join(unregistered)} is registered", "event_types")
    try:
        runtime.rules.policy.check(rule)
    except ValueError as exc:
        raise _invalid(str(exc), "topics") from None
    # Only topics new to the service are checked: disabling or editing a rule during an outage
    # must not wait for Kafka.
    known = set(runtime.needed_topics())
    try:
        await runtime.provide_topics([topic for topic in rule.topics if topic not in known])
    except MissingTopicsError as exc:
        raise _invalid(str(exc), "topics") from None
    except TopicsUnavailableError as exc:
        raise HTTPException(
            503, f"Kafka did not answer, so the rule's topics could not be checked; nothing was saved: {exc}"
        ) from None
    return await runtime.rules.save(rule, actor)


@router.get("", response_model=RuleSet, summary="All routing rules, in evaluation order")
async def list_rules(runtime: RuntimeDep) -> Response:
    return JsonResponse(_rule_set(runtime))


@router.post("", status_code=201, response_model=RoutingRule, responses={409: {"model": ErrorBody}, **ERRORS})
async def create_rule(rule: RoutingRule, runtime: RuntimeDep, actor: ActorDep) -> Response:
    """Add a rule. Its topics must be on KAFKA_ALLOWED_TOPICS or follow KAFKA_TOPIC_PATTERN."""
    if any(existing.id == rule.id for existing in runtime.router.rules):
        raise HTTPException(409, f"routing rule {rule.id!r} exists: use PUT to replace it")
    await _save(runtime, rule, actor)
    return JsonResponse(rule.model_dump(mode="json"), status_code=201)


@router.post(
    "/test", summary="Route an event without publishing it: which rules match, and what they produce"
)
async def test_rule(body: RuleTest, runtime: RuntimeDep) -> dict[str, Any]:
    """Answers the rules that matched and, per topic, the key and the message that would be written."""
    return explain(runtime.router, body.event)


@router.get("/{rule_id}", response_model=RoutingRule, responses=ERRORS)
async def get_rule(rule_id: str, runtime: RuntimeDep) -> Response:
    return JsonResponse(_find(runtime, rule_id).model_dump(mode="json"))


@router.put("/{rule_id}", response_model=RoutingRule, responses=ERRORS)
async def replace_rule(rule_id: str, rule: RoutingRule, runtime: RuntimeDep, actor: ActorDep) -> Response:
    """Create or replace the rule with this id."""
    if rule.id != rule_id:
        raise _invalid(f"the body's id {rule.id!r} differs from the path's {rule_id!r}", "id")
    created = await _save(runtime, rule, actor)
    return JsonResponse(rule.model_dump(mode="json"), status_code=201 if created else 200)


@router.patch("/{rule_id}", response_model=RoutingRule, responses=ERRORS)
async def patch_rule(rule_id: str, changes: dict[str, Any], runtime: RuntimeDep, actor: ActorDep) -> Response:
    """Change some fields (e.g. `{"enabled": false}`); the result is validated as a whole."""
    if "id" in changes and changes["id"] != rule_id:
        raise _invalid("a rule's id cannot be changed", "id")
    merged = {**_find(runtime, rule_id).model_dump(mode="json"), **changes}
    try:
        rule = RoutingRule.model_validate(merged)
    except ValidationError as exc:
        raise RequestValidationError(
            [{**error, "loc": ("body", *error["loc"])} for error in exc.errors()]
        ) from None
    await _save(runtime, rule, actor)
    return JsonResponse(rule.model_dump(mode="json"))


@router.delete("/{rule_id}", status_code=204, responses=ERRORS)
async def delete_rule(rule_id: str, runtime: RuntimeDep, actor: ActorDep) -> Response:
    if not await runtime.rules.delete(rule_id, actor):
        raise HTTPException(404, f"no routing rule {rule_id!r}")
    return Response(status_code=204)


def explain(router: Router, event: Any) -> dict[str, Any]:
    """What routing would do with `event`, without publishing."""
    route = router.route(event)
    fields = event.model_dump(mode="json")
    outputs = []
    for destination in route.destinations:
        key = (
            templates.render(destination.key_template, fields) if destination.key_template else event.user_id
        )
        message = (
            templates.render(destination.message_template, fields)
            if destination.message_template is not None
            else fields
        )
        outputs.append(
            {"topic": destination.topic, "rule_id": destination.rule_id, "key": key, "message": message}
        )
    return {
        "event_id": str(event.event_id),
        "matched_rules": list(route.rule_ids),
        "topics": list(route.topics),
        "unrouted": route.unrouted,
        "records": outputs,
    }
