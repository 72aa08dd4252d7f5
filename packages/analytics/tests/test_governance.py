"""The output topics under the service's topic policy."""

from __future__ import annotations

import pytest

from app.config.settings import SettingsError, load_settings
from learning_analytics.main import check_governance


def test_with_a_convention_outputs_follow_it_or_are_allowed_by_name() -> None:
    settings = load_settings(kafka_topic_pattern=r"${env}\.${eventType}\..+", environment="prod",
                             kafka_allowed_topics="analytics.dlq")  # fmt: skip
    check_governance(settings, {"prod.learner.stats": "learner", "analytics.dlq": "dlq"})
    with pytest.raises(
        SettingsError, match=r"topic\(s\) user.learning_stats are not on KAFKA_ALLOWED_TOPICS"
    ):
        check_governance(settings, {"user.learning_stats": "learner", "prod.item.stats": "item"})


def test_without_a_convention_the_outputs_are_configured_topics() -> None:
    check_governance(load_settings(), {"user.learning_stats": "learner"})
