"""`/admin/api-keys`: create, list, show and revoke API keys.

A new key is shown once, in the answer to its creation; only its SHA-256 is stored. Keys defined
in API_KEYS are listed too (source `config`) but are changed in the configuration, not here.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel, ConfigDict, Field

from app.api.dependencies import ActorDep, RuntimeDep
from app.api.request_body import ADMIN_MAX_BYTES, BODY_RESPONSES, limited_body_route
from app.api.schemas import ErrorBody
from app.runtime import Runtime
from app.security.key_store import KeyRecord
from app.security.keys import ApiKey, EventTypePattern, Scope

logger = logging.getLogger(__name__)

router = APIRouter(
    prefix="/admin/api-keys",
    tags=["admin: API keys"],
    route_class=limited_body_route(ADMIN_MAX_BYTES),
    responses=BODY_RESPONSES,
)


class NewApiKey(BaseModel):
    """What the new key may do."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [{"name": "web-app", "scopes": ["ingest"], "event_types": ["attempt"]}]
        },
    )

    name: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")]
    scopes: Annotated[list[Scope], Field(min_length=1)]
    event_types: list[EventTypePattern] | None = Field(
        None,
        description="Limit `ingest` to these types, or prefixes of registered ones (`workflow.*`); null: all.",
    )
    rate_limit: Annotated[float, Field(gt=0, le=1_000_000)] | None = Field(
        None, description="Events per second for this key; null: RATE_LIMIT_EVENTS_PER_SECOND."
    )


class ApiKeyView(BaseModel):
    """A key without its secret: `prefix` is its first characters, to recognise it."""

    id: str
    name: str
    prefix: str | None
    scopes: list[str]
    event_types: list[str] | None
    rate_limit: float | None
    source: str = Field(description="`database` (made here) or `config` (API_KEYS).")
    created_at: datetime | None
    revoked_at: datetime | None


class CreatedApiKey(ApiKeyView):
    key: str = Field(description="The key itself. Shown only now: store it safely.")


def _view(record: KeyRecord) -> dict[str, Any]:
    return {
        "id": record.id,
        "name": record.name,
        "prefix": record.prefix,
        "scopes": record.scopes,
        "event_types": record.event_types,
        "rate_limit": record.rate_limit,
        "source": record.source,
        "created_at": record.created_at,
        "revoked_at": record.revoked_at,
    }


def _configured_view(key: ApiKey) -> dict[str, Any]:
    return {
        "id": key.id,
        "name": key.name,
        "prefix": None,
        "scopes": sorted(key.scopes),
        "event_types": sorted(key.event_types) if key.event_types is not None else None,
        "rate_limit": key.rate_limit,
        "source": "config",
        "created_at": None,
        "revoked_at": None,
    }


def _all(runtime: Runtime) -> list[dict[str, Any]]:
    configured = [_configured_view(key) for key in runtime.keys.configured]
    return configured + [_view(record) for record in runtime.keys.records]


@router.get("", response_model=list[ApiKeyView], summary="All keys, without their secrets")
async def list_keys(runtime: RuntimeDep) -> list[dict[str, Any]]:
    return _all(runtime)


@router.post(
    "",
    status_code=201,
    response_model=CreatedApiKey,
    summary="Create a key; the answer holds the key, shown this once",
    responses={422: {"model": ErrorBody, "description": "Invalid name, scope or event type."}},
)
async def create_key(body: NewApiKey, runtime: RuntimeDep, actor: ActorDep) -> dict[str, Any]:
    """Usable here at once, on other workers and instances within API_KEYS_REFRESH_INTERVAL."""
    record, key = await runtime.keys.create(body.name, body.scopes, body.event_types, body.rate_limit, actor)
    return {**_view(record), "key": key}


@router.get(
    "/{key_id}",
    response_model=ApiKeyView,
    summary="One key, without its secret",
    responses={404: {"model": ErrorBody, "description": "No key with this id."}},
)
async def get_key(key_id: str, runtime: RuntimeDep) -> dict[str, Any]:
    for view in _all(runtime):
        if view["id"] == key_id:
            return view
    raise HTTPException(404, f"no API key {key_id!r}")


@router.delete(
    "/{key_id}",
    response_model=ApiKeyView,
    summary="Revoke a key: refused (401) from now on, here at once and everywhere within seconds",
    responses={
        404: {"model": ErrorBody, "description": "No key with this id."},
        409: {"model": ErrorBody, "description": "The key is defined in API_KEYS: remove it there."},
    },
)
async def revoke_key(key_id: str, runtime: RuntimeDep, actor: ActorDep) -> dict[str, Any]:
    if any(key.id == key_id for key in runtime.keys.configured):
        raise HTTPException(
            409, f"API key {key_id!r} is defined in API_KEYS: remove it from the configuration"
        )
    record = await runtime.keys.revoke(key_id, actor)
    if record is None:
        raise HTTPException(404, f"no API key {key_id!r}")
    return _view(record)
