"""Rules from a YAML file, templates checked at load, topic governance."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from app.config.settings import load_settings
from app.routing.governance import TopicPolicy
from app.routing.loading import initial_rules
from app.routing.router import Router
from app.routing.rules import RoutingRule
from event_models.models import AttemptEvent
from tests.conftest import attempt

ROOT = Path(__file__).resolve().parents[3]


def test_the_example_file_loads_with_configured_topic_names() -> None:
    settings = load_settings(
        _env_file=None,
        routing_rules_file=ROOT / "routing_rules.example.yaml",
        kafka_topic_ml_training="prod.ml",
    )
    rules = initial_rules(settings)

    assert [rule.id for rule in rules] == [
        "ml-training-high-quality-attempts",
        "all-attempts",
        "sessions-with-items",
        "completed-placements",
        "all-activities",
    ]
    assert rules[0].topics == ["prod.ml"]
    route = Router(rules).route(AttemptEvent.model_validate(attempt(quality=5)))
    assert route.destinations[0].message_template is not None


def test_without_a_file_the_defaults_apply() -> None:
    assert len(initial_rules(load_settings(_env_file=None))) == 5


def test_a_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not exist"):
        initial_rules(load_settings(_env_file=None, routing_rules_file=tmp_path / "nope.yaml"))


def test_unknown_template_variables_are_refused_when_the_rule_is_made() -> None:
    with pytest.raises(ValidationError, match="unknown variable"):
        RoutingRule.model_validate(
            {"id": "r", "name": "r", "event_types": ["session"], "topics": ["t"], "key_template": "{quality}"}
        )


def test_topic_policy_by_name_and_by_convention() -> None:
    policy = TopicPolicy({"known"}, r"${env}\.${eventType}\.[a-z]+", "prod")
    rule = RoutingRule.model_validate(
        {
            "id": "r",
            "name": "r",
            "event_types": ["attempt"],
            "topics": ["known", "prod.attempt.x", "dev.attempt.x"],
        }
    )
    assert policy.forbidden_topics(rule) == ["dev.attempt.x"]
    with pytest.raises(ValueError, match=r"dev\.attempt\.x"):
        policy.check(rule)


def test_an_empty_message_template_is_refused() -> None:
    with pytest.raises(ValidationError, match="message_template maps no field: leave it out"):
        RoutingRule(id="r", name="r", event_types=["attempt"], topics=["user.attempts"], message_template={})
