"""`/admin/event-types`: register, list, evolve and switch event types; `/v1/event-types`: the types
and schemas producers may send (ingest scope).

Changes are checked (schema rules, compatibility with the latest version) before they are written,
applied in this worker at once and in every other worker and instance at its next poll.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, HTTPException
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field
from starlette.responses import Response

from app.api.dependencies import ActorDep, RuntimeDep
from app.api.errors import error_response
from app.api.request_body import ADMIN_MAX_BYTES, BODY_RESPONSES, limited_body_route
from app.api.responses import JsonResponse
from app.api.schemas import ErrorBody
from app.event_types.definition import EventTypeChanges, EventTypeDefinition, EventTypeView
from app.event_types.events import validate_custom
from app.event_types.registry import RegisteredType, builtin_views
from app.event_types.schemas import SchemaRefusedError
from app.event_types.store import EventTypeConflictError, TooManyEventTypesError, UnknownEventTypeError
from app.runtime import Runtime

router = APIRouter(
    prefix="/admin/event-types",
    tags=["admin: event types"],
    route_class=limited_body_route(ADMIN_MAX_BYTES),
    responses=BODY_RESPONSES,
)
producer_router = APIRouter(prefix="/v1/event-types", tags=["events"])

NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorBody, "description": "No such event type."}}
CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {
        "model": ErrorBody,
        "description": "The name is taken, the type is built in (read-only), or the new schema breaks the "
        "type's compatibility mode: `problems` names each incompatibility.",
    }
}

EXAMPLE_TYPE = {
    "name": "workflow.task_completed",
    "description": "A workflow task finished.",
    "owner": "workflow-team",
    "schema": {
        "type": "object",
        "properties": {
            "workflow_id": {"type": "string", "maxLength": 128},
            "task_id": {"type": "string", "maxLength": 128},
            "duration_ms": {"type": "integer", "minimum": 0},
        },
        "required": ["workflow_id", "task_id"],
        "additionalProperties": False,
    },
    "partition_key": "workflow_id",
    "idempotency_fields": ["workflow_id", "task_id"],
    "compatibility": "backward",
}


class EventTypeList(BaseModel):
    version: int = Field(description="The registry's version: it moves with every change.")
    event_types: list[EventTypeView]


class SchemaVersion(BaseModel):
    name: str
    version: int
    schema_: dict[str, Any] = Field(alias="schema")


class ValidationAnswer(BaseModel):
    valid: bool
    schema_version: int
    errors: list[dict[str, Any]] = Field(description="Each bad field: `field`, `message`, `type`.")


def _custom(runtime: Runtime, name: str) -> RegisteredType:
    registered = runtime.event_types.get(name)
    if registered is None:
        if name in builtin_views():
            raise HTTPException(409, f"{name} is a built-in event type: read-only")
        raise HTTPException(404, f"no event type {name!r}")
    return registered


def _view(view: EventTypeView, status: int = 200) -> Response:
    return JsonResponse(view.model_dump(mode="json", by_alias=True), status_code=status)


def _refused(exc: SchemaRefusedError) -> RequestValidationError:
    return RequestValidationError(
        [{"loc": ("body", "schema"), "msg": problem, "type": "schema"} for problem in exc.problems]
    )


def _types(runtime: Runtime) -> Response:
    return Response(runtime.event_types.listing_json(), media_type="application/json")


@router.get(
    "", response_model=EventTypeList, summary="Every event type: the built-in ones and the registered"
)
async def list_event_types(runtime: RuntimeDep) -> Response:
    return _types(runtime)


@producer_router.get(
    "", response_model=EventTypeList, summary="The event types producers may send, with their schemas"
)
async def producer_event_types(runtime: RuntimeDep) -> Response:
    return _types(runtime)


@router.post(
    "",
    status_code=201,
    response_model=EventTypeView,
    responses={**CONFLICT, 422: {"model": ErrorBody, "description": "Invalid definition or schema."}},
)
async def register_event_type(
    definition: Annotated[EventTypeDefinition, Body(examples=[EXAMPLE_TYPE])],
    runtime: RuntimeDep,
    actor: ActorDep,
) -> Response:
    """Register a type at version 1; its events are taken at `POST /v1/events/{name}` once it is
    enabled, by every worker within the routing rules' poll interval."""
    if definition.name in builtin_views():
        raise HTTPException(409, f"{definition.name} is a built-in event type")
    try:
        view = await runtime.event_types.register(definition, actor)
    except EventTypeConflictError as exc:
        raise HTTPException(409, str(exc)) from None
    except TooManyEventTypesError as exc:
        raise RequestValidationError([{"loc": ("body", "name"), "msg": str(exc), "type": "limit"}]) from None
    return _view(view, 201)


@router.get("/{name}", response_model=EventTypeView, responses=NOT_FOUND)
async def get_event_type(name: str, runtime: RuntimeDep) -> Response:
    """The type with its latest schema and the numbers of every version."""
    view = runtime.event_types.view(name)
    if view is None:
        raise HTTPException(404, f"no event type {name!r}")
    return _view(view)


@router.get("/{name}/versions/{version}", response_model=SchemaVersion, responses=NOT_FOUND)
async def get_schema_version(name: str, version: int, runtime: RuntimeDep) -> Response:
    view = runtime.event_types.view(name)
    if view is None:
        raise HTTPException(404, f"no event type {name!r}")
    if view.builtin:
        schema = view.schema_ if version == 1 else None
    else:
        schema = _custom(runtime, name).record.schemas.get(version)
    if schema is None:
        raise HTTPException(404, f"{name} has no schema version {version}")
    return JsonResponse({"name": name, "version": version, "schema": schema})


@router.put(
    "/{name}/schema",
    response_model=EventTypeView,
    responses={**NOT_FOUND, **CONFLICT, 422: {"model": ErrorBody, "description": "Not a schema we accept."}},
)
async def evolve_schema(
    name: str,
    schema: Annotated[dict[str, Any], Body(examples=[EXAMPLE_TYPE["schema"]])],
    runtime: RuntimeDep,
    actor: ActorDep,
) -> Response:
    """A new schema version, checked against the latest under the type's compatibility mode."""
    _custom(runtime, name)
    try:
        view = await runtime.event_types.add_version(name, schema, actor)
    except SchemaRefusedError as exc:
        raise _refused(exc) from None
    except ValueError as exc:  # the key or identity fields are missing from the new schema
        if not isinstance(exc, EventTypeConflictError):
            raise RequestValidationError(
                [{"loc": ("body",), "msg": str(exc), "type": "value_error"}]
            ) from None
        return error_response(409, str(exc), "incompatible_schema", problems=exc.problems)
    except UnknownEventTypeError:
        raise HTTPException(404, f"no event type {name!r}") from None
    return _view(view)


@router.patch("/{name}", response_model=EventTypeView, responses={**NOT_FOUND, **CONFLICT})
async def change_event_type(
    name: str, changes: EventTypeChanges, runtime: RuntimeDep, actor: ActorDep
) -> Response:
    """Change the description, owner or `enabled` (a disabled type's events are answered 410)."""
    _custom(runtime, name)
    try:
        view = await runtime.event_types.change(name, changes, actor)
    except UnknownEventTypeError:
        raise HTTPException(404, f"no event type {name!r}") from None
    return _view(view)


@router.post("/{name}/validate", response_model=ValidationAnswer, responses={**NOT_FOUND, **CONFLICT})
async def validate_event(name: str, event: Annotated[Any, Body()], runtime: RuntimeDep) -> Response:
    """The errors a sample event would get; nothing is published."""
    registered = _custom(runtime, name)
    checked, errors = validate_custom(registered, event)
    version = checked.schema_version if checked is not None else registered.record.version
    return JsonResponse({"valid": errors is None, "schema_version": version, "errors": errors or []})
