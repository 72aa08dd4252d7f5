from __future__ import annotations

import pytest

from app.config.settings import SettingsError
from learning_analytics.settings import load_analytics_settings


def test_defaults() -> None:
    settings = load_analytics_settings()
    assert (settings.window_ms, settings.grace_ms) == (3_600_000, 300_000)
    assert settings.aggregate_set == {"learner", "item", "sessions"}


def test_a_dead_transaction_is_aborted_one_commit_interval_and_ten_seconds_after_it_began() -> None:
    assert load_analytics_settings().transaction_timeout_ms == 15_000
    assert load_analytics_settings(commit_interval="30s").transaction_timeout_ms == 40_000


def test_a_bad_setting_is_named_with_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANALYTICS_WINDOW", "soon")
    with pytest.raises(SettingsError, match="ANALYTICS_WINDOW"):
        load_analytics_settings()
    monkeypatch.delenv("ANALYTICS_WINDOW")
    with pytest.raises(SettingsError, match="ANALYTICS_AGGREGATES: hourly; choose from"):
        load_analytics_settings(aggregates="learner,hourly")


def test_consumer_properties_take_librdkafka_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANALYTICS_CONSUMER_CONFIG__SESSION_TIMEOUT_MS", "6000")
    assert load_analytics_settings().consumer_config == {"session.timeout.ms": "6000"}


def test_env_example_lists_every_setting() -> None:
    from pathlib import Path

    from learning_analytics.settings import AnalyticsSettings

    listed = (Path(__file__).resolve().parents[3] / ".env.example").read_text()
    missing = [f"ANALYTICS_{name.upper()}" for name in AnalyticsSettings.model_fields
               if f"ANALYTICS_{name.upper()}" not in listed]  # fmt: skip
    assert missing == [], f".env.example lacks {missing}"


def test_topic_names_are_checked_as_the_service_checks_them() -> None:
    with pytest.raises(
        SettingsError, match="ANALYTICS_LEARNER_TOPIC='user stats': topic 'user stats' is not a legal"
    ):
        load_analytics_settings(learner_topic="user stats")
