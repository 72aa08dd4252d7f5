"""Safe, declarative rule conditions (no eval): comparisons, membership, existence, all/any/not.

A condition is plain data, e.g. `{"field": "quality", "op": ">=", "value": 4}` or
`{"all": [{...}, {"not": {...}}]}`, so it can live in a config file or come through an admin API.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from enum import Enum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, model_validator

from event_models.models import BaseEvent

ComparisonOp = Literal["==", "!=", "<", "<=", ">", ">="]
MAX_PATTERN_LENGTH = 256

_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}

FieldPath = Annotated[str, Field(min_length=1, max_length=128, pattern=r"^[A-Za-z_][A-Za-z0-9_.-]*$")]


class FieldTest(BaseModel):
    """Test one event field: `op` is a comparison, `in`, `exists`, `prefix` or `regex`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    field: FieldPath
    op: ComparisonOp | Literal["in", "exists", "prefix", "regex"]
    value: JsonValue = None

    @model_validator(mode="after")
    def _value_fits_op(self) -> FieldTest:
        if self.op == "in" and not isinstance(self.value, list):
            raise ValueError("op 'in' needs a list value")
        if self.op in {"prefix", "regex"}:
            if not isinstance(self.value, str) or len(self.value) > MAX_PATTERN_LENGTH:
                raise ValueError(f"op {self.op!r} needs a string of at most {MAX_PATTERN_LENGTH} characters")
            if self.op == "regex":
                try:
                    re.compile(self.value)
                except re.error as exc:
                    raise ValueError(f"invalid regular expression: {exc}") from None
        if self.op == "exists" and not isinstance(self.value, bool | None):
            raise ValueError("op 'exists' takes true, false or no value")
        return self

    def matches(self, event: BaseEvent) -> bool:
        try:
            actual = event.field_value(self.field)
        except KeyError:
            return self.op == "exists" and self.value is False
        op = self.op
        if op == "exists":
            return (actual is not None) == (self.value is not False)
        if actual is None:
            return op == "!=" and self.value is not None
        if isinstance(actual, Enum) and isinstance(actual.value, str):  # enums compare by their value
            actual = actual.value
        compare = _COMPARE.get(op)  # the comparisons first: routing tests them for every event
        if compare is not None:
            try:
                return compare(actual, self.value)
            except TypeError:  # e.g. "abc" < 3: a mismatch of types is simply no match
                return False
        if op == "in":
            assert isinstance(self.value, list)
            return actual in self.value
        if op == "prefix":
            return isinstance(actual, str) and actual.startswith(str(self.value))
        return isinstance(actual, str) and re.search(str(self.value), actual) is not None  # regex


class AllOf(BaseModel):
    """True when every sub-condition is true (and for an empty list)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    all: list[Condition] = Field(max_length=64)

    def matches(self, event: BaseEvent) -> bool:
        return all(item.matches(event) for item in self.all)


class AnyOf(BaseModel):
    """True when at least one sub-condition is true."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    any: list[Condition] = Field(max_length=64)

    def matches(self, event: BaseEvent) -> bool:
        return any(item.matches(event) for item in self.any)


class Not(BaseModel):
    """Negates one sub-condition."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    not_: Condition = Field(alias="not")

    def matches(self, event: BaseEvent) -> bool:
        return not self.not_.matches(event)


Condition = FieldTest | AllOf | AnyOf | Not

for _model in (AllOf, AnyOf, Not):
    _model.model_rebuild()
