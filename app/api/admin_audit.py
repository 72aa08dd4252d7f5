"""`GET /admin/audit`: the audit trail of admin changes, newest first, with filters and paging."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import AwareDatetime, BaseModel, Field

from app.api.dependencies import RuntimeDep
from app.audit.trail import AuditFilter

router = APIRouter(prefix="/admin/audit", tags=["admin: audit trail"])


class AuditEntryView(BaseModel):
    id: int
    at: datetime
    key_id: str = Field(description="The API key that made the change (`anonymous` with AUTH_ENABLED=false).")
    key_name: str
    request_id: str | None
    action: str = Field(
        description="`routing_rule.create|update|delete`, `api_key.create|revoke`, "
        "`publisher.pause|resume`, `dlq.replay`."
    )
    target: str | None = Field(description="What changed: a rule id, a key id, the flag, the DLQ topic.")
    before: Any = Field(description="The state before the change (null for a creation).")
    after: Any = Field(description="The state after it (null for a deletion).")


class AuditPage(BaseModel):
    entries: list[AuditEntryView]
    next_before_id: int | None = Field(
        description="Pass as `before_id` for the next (older) page; null at the end."
    )


@router.get("", response_model=AuditPage, summary="Admin changes, newest first")
async def audit_trail(
    runtime: RuntimeDep,
    action: Annotated[
        str | None, Query(max_length=64, description="An action, or its prefix: `routing_rule`")
    ] = None,
    target: Annotated[str | None, Query(max_length=200)] = None,
    key_id: Annotated[str | None, Query(max_length=64)] = None,
    since: Annotated[AwareDatetime | None, Query(description="At or after this time (RFC 3339).")] = None,
    until: Annotated[AwareDatetime | None, Query(description="Before this time.")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    before_id: Annotated[int | None, Query(ge=1, description="Entries older than this id (paging).")] = None,
) -> dict[str, Any]:
    """Every routing-rule, API-key, pause/resume and DLQ-replay change: when, by which key (id and name,
    never the secret), what, and the state before and after. Each is also a log line (`app.audit`)."""
    where = AuditFilter(action=action, target=target, key_id=key_id, since=since, until=until)
    entries = await asyncio.to_thread(runtime.audit.page, where, limit + 1, before_id)
    more = len(entries) > limit
    entries = entries[:limit]
    return {"entries": entries, "next_before_id": entries[-1]["id"] if more else None}
