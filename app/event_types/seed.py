"""Event-type files (`event_types/*.json`): types with the routing rules that send them somewhere.

`EVENT_TYPES_FILES` names files that seed an empty registry at the first start, as
ROUTING_RULES_FILE seeds the rule table; `ingest types apply FILE` loads the same files into a
running service through the admin API.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from app.event_types.definition import EventTypeDefinition
from app.routing.rules import RoutingRule

logger = logging.getLogger(__name__)


class EventTypeFile(BaseModel):
    """One file: what it is for, its types, and the rules that route them."""

    model_config = ConfigDict(extra="forbid")

    description: str = ""
    event_types: list[EventTypeDefinition]
    routing_rules: list[RoutingRule] = Field(default_factory=list)


def load_event_type_files(paths: Sequence[str]) -> EventTypeFile:
    """The files' types and rules together; ValueError naming the file and the problem."""
    merged = EventTypeFile(event_types=[])
    for name in paths:
        path = Path(name)
        try:
            loaded = EventTypeFile.model_validate(orjson.loads(path.read_bytes()))
        except (OSError, orjson.JSONDecodeError) as exc:
            raise ValueError(f"event type file {path}: {exc}") from None
        except ValidationError as exc:
            raise ValueError(f"event type file {path}: {exc}") from None
        merged.event_types += loaded.event_types
        merged.routing_rules += loaded.routing_rules
    return merged
