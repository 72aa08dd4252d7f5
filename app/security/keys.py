"""API keys: how they look, how they are hashed, and what a key may do.

A key is `eik_` followed by 43 random URL-safe characters (256 bits). Only its SHA-256 is ever
stored: a key that random cannot be guessed from its hash, so a slow password hash buys nothing
and would cost every request milliseconds.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Literal, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr, model_validator

from event_models.models import REGISTERED_TYPE_NAME, EventType

KEY_PREFIX = "eik_"
SHA256_HEX = re.compile(r"^[0-9a-f]{64}$")
SHOWN_PREFIX_LENGTH = 10  # `eik_` and 6 characters: enough to tell keys apart in a listing


class Scope(StrEnum):
    """What a key may do: post events, administer the service, read metrics."""

    INGEST = "ingest"
    ADMIN = "admin"
    METRICS = "metrics"


def generate_key() -> str:
    """A new random API key (shown once to its owner, never stored)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    """The SHA-256 of a key, as stored and looked up."""
    return hashlib.sha256(key.encode()).hexdigest()


def shown_prefix(key: str) -> str:
    """The part of a key that listings and logs may show."""
    return key[:SHOWN_PREFIX_LENGTH]


_BUILTIN = frozenset(kind.value for kind in EventType)
_REGISTERED = re.compile(REGISTERED_TYPE_NAME)
_PREFIX = re.compile(r"^[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*\.\*$")  # `workflow.*`


def _event_type_pattern(value: str) -> str:
    if value in _BUILTIN or _REGISTERED.fullmatch(value) or _PREFIX.fullmatch(value):
        return value
    raise ValueError(
        f"{value!r} is not an event type ({', '.join(sorted(_BUILTIN))}, a registered type's "
        "dotted name) nor a prefix of registered types such as workflow.*"
    )


# What a key may be limited to: a type's name, or every registered type under a prefix (`workflow.*`).
EventTypePattern = Annotated[str, Field(max_length=128), AfterValidator(_event_type_pattern)]


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A known key: who it is and what it may do. Never holds the key itself."""

    id: str
    name: str
    scopes: frozenset[Scope]
    event_types: frozenset[str] | None = None  # names and `prefix.*` patterns; None: every type
    rate_limit: float | None = None  # events per second; None: RATE_LIMIT_EVENTS_PER_SECOND
    source: Literal["config", "database", "none"] = "database"
    revoked: bool = False

    def may_post(self, event_type: str) -> bool:
        allowed = self.event_types
        if allowed is None or event_type in allowed:
            return True
        return any(p[-1] == "*" and event_type.startswith(p[:-1]) for p in allowed)


# The caller when AUTH_ENABLED=false: everything is allowed; rate limits apply per client address.
ANONYMOUS = ApiKey(id="anonymous", name="anonymous", scopes=frozenset(Scope), source="none")


class ConfiguredApiKey(BaseModel):
    """A key defined in configuration (API_KEYS, a JSON list): its SHA-256, or the key itself."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._-]+$")]
    sha256: str | None = Field(None, description="hex SHA-256 of the key (preferred: no secret in config)")
    key: SecretStr | None = Field(None, description="the key itself, hashed at start and then forgotten")
    scopes: Annotated[list[Scope], Field(min_length=1)]
    event_types: list[EventTypePattern] | None = None
    rate_limit: Annotated[float, Field(gt=0, le=1_000_000)] | None = None

    @model_validator(mode="after")
    def _one_secret(self) -> Self:
        if (self.sha256 is None) == (self.key is None):
            raise ValueError(f"API key {self.name!r}: give exactly one of sha256 and key")
        if self.sha256 is not None and not SHA256_HEX.fullmatch(self.sha256):
            raise ValueError(f"API key {self.name!r}: sha256 must be 64 lower-case hex digits")
        if self.key is not None and len(self.key.get_secret_value()) < 16:
            raise ValueError(f"API key {self.name!r}: a key must be at least 16 characters long")
        return self

    def digest(self) -> str:
        return self.sha256 or hash_key(self.key.get_secret_value() if self.key else "")

    def to_api_key(self) -> ApiKey:
        return ApiKey(
            id=f"config:{self.name}",
            name=self.name,
            scopes=frozenset(self.scopes),
            event_types=frozenset(self.event_types) if self.event_types is not None else None,
            rate_limit=self.rate_limit,
            source="config",
        )
