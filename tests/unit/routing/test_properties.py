"""Property tests (hypothesis) for rule conditions and templates: the laws they must keep for any input."""

from __future__ import annotations

import contextlib
import string
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from app.routing import templates
from app.routing.conditions import AllOf, AnyOf, Condition, FieldTest, Not
from app.routing.rules import RoutingRule
from event_models.models import AttemptEvent
from tests.conftest import attempt

CONDITION: TypeAdapter[Condition] = TypeAdapter(Condition)
OPS = ["==", "!=", "<", "<=", ">", ">="]
FIELDS = [
    "quality",
    "user_id",
    "correct",
    "time_taken_ms",
    "metadata.source",
    "session_id",
    "nope",
    "metadata",
]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10, 10) | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=8,
)
events = st.builds(
    lambda quality, user, metadata, correct: AttemptEvent.model_validate(
        attempt(quality=quality, user_id=user, metadata=metadata, correct=correct)
    ),
    st.integers(0, 5),
    st.text(string.ascii_letters + string.digits + "{}.-_", min_size=1, max_size=20),
    st.dictionaries(st.sampled_from(["source", "app", "x"]), st.text(max_size=10), max_size=3),
    st.booleans(),
)
field_tests = st.builds(
    FieldTest,
    field=st.sampled_from(FIELDS),
    op=st.sampled_from(OPS),
    value=st.one_of(st.integers(-1, 6), st.text(max_size=5), st.booleans(), st.none()),
) | st.builds(
    FieldTest, field=st.sampled_from(FIELDS), op=st.just("exists"), value=st.sampled_from([True, False, None])
)
conditions = st.recursive(
    field_tests,
    lambda inner: (
        st.builds(AllOf, all=st.lists(inner, max_size=3))
        | st.builds(AnyOf, any=st.lists(inner, max_size=3))
        | st.builds(lambda c: Not.model_validate({"not": c}), inner)
    ),
    max_leaves=6,
)


@given(event=events, condition=conditions)
def test_any_condition_on_any_event_answers_a_bool_and_never_raises(
    event: AttemptEvent, condition: Any
) -> None:
    assert isinstance(condition.matches(event), bool)


@given(event=events, condition=conditions)
def test_not_negates(event: AttemptEvent, condition: Any) -> None:
    assert Not.model_validate({"not": condition}).matches(event) is (not condition.matches(event))


@given(event=events, left=conditions, right=conditions)
def test_de_morgan(event: AttemptEvent, left: Any, right: Any) -> None:
    negated_all = Not.model_validate({"not": AllOf(all=[left, right])})
    any_negated = AnyOf(any=[Not.model_validate({"not": left}), Not.model_validate({"not": right})])
    assert negated_all.matches(event) == any_negated.matches(event)


@given(event=events, op=st.sampled_from(OPS), value=st.integers(-1, 6))
def test_numeric_comparisons_agree_with_python(event: AttemptEvent, op: str, value: int) -> None:
    expected = {
        "==": event.quality == value,
        "!=": event.quality != value,
        "<": event.quality < value,
        "<=": event.quality <= value,
        ">": event.quality > value,
        ">=": event.quality >= value,
    }[op]
    assert FieldTest(field="quality", op=op, value=value).matches(event) is expected


@given(event=events)
def test_empty_all_is_true_and_empty_any_is_false(event: AttemptEvent) -> None:
    assert AllOf(all=[]).matches(event)
    assert not AnyOf(any=[]).matches(event)


@given(data=json_values)
def test_conditions_from_arbitrary_json_validate_or_refuse_cleanly(data: Any) -> None:
    with contextlib.suppress(ValidationError):
        CONDITION.validate_python(data)


@given(
    data=st.dictionaries(
        st.sampled_from(
            [
                "id",
                "event_type",
                "topics",
                "condition",
                "priority",
                "key_template",
                "message_template",
                "enabled",
            ]
        ),
        json_values,
        max_size=8,
    )
)
@settings(max_examples=200)
def test_rules_from_arbitrary_json_validate_or_refuse_cleanly(data: dict[str, Any]) -> None:
    with contextlib.suppress(ValidationError):
        RoutingRule.model_validate(data)


@given(event=events, prefix=st.text(max_size=10), suffix=st.text(max_size=10))
def test_text_templates_substitute_once_without_re_expanding_values(
    event: AttemptEvent, prefix: str, suffix: str
) -> None:
    # user_id may itself contain "{quality}": it must come out literally, never be expanded.
    prefix, suffix = prefix.replace("{", "("), suffix.replace("{", "(")
    values = event.model_dump(mode="json")
    assert templates.render(f"{prefix}{{user_id}}{suffix}", values) == f"{prefix}{event.user_id}{suffix}"


@given(event=events)
def test_a_whole_placeholder_keeps_the_type(event: AttemptEvent) -> None:
    values = event.model_dump(mode="json")
    assert templates.render("{quality}", values) == event.quality
    assert templates.render("{correct}", values) is event.correct
    assert templates.render({"q": ["{quality}", "x"]}, values) == {"q": [event.quality, "x"]}


@given(template=json_values)
def test_a_template_without_placeholders_renders_to_itself(template: Any) -> None:
    if not templates.variables_of(template):
        assert templates.render(template, {}) == template
