"""The analytics component's own settings (ANALYTICS_*); the Kafka connection, the input topics and
the topic defaults are the service's (KAFKA_*), read with the service's own settings class."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.config.durations import Duration
from app.config.settings import SettingsError, _describe, librdkafka_names
from app.routing.topics import check_topic_name

Aggregate = Literal["learner", "item", "sessions"]
Guarantee = Literal["auto", "exactly-once", "at-least-once"]


class AnalyticsSettings(BaseSettings):
    """Every knob of the analytics component. Environment variables: ANALYTICS_ + the field name."""

    model_config = SettingsConfigDict(
        env_prefix="ANALYTICS_",
        env_file=".env",
        env_ignore_empty=True,
        env_nested_delimiter="__",
        extra="ignore",
        validate_default=True,
    )

    enabled: bool = Field(True, description="`make run` starts the component beside the service")
    window: Duration = timedelta(hours=1)
    grace: Duration = timedelta(minutes=5)
    # Which aggregates run: learner (per user_id), item (per item_id, re-keyed), sessions (per learner per day).
    aggregates: str = "learner,item,sessions"
    learner_topic: str = "user.learning_stats"
    item_topic: str = "item.learning_stats"
    session_topic: str = "user.session_stats"
    # Events too late for their window (beyond the grace): `<input topic>` + this suffix.
    late_suffix: str = ".late"
    dlq_topic: str = "analytics.dlq"
    consumer_group: str = "event-ingest-analytics"
    # auto: exactly-once, except on the development broker, which never aborts a dead transaction.
    processing_guarantee: Guarantee = "auto"
    commit_interval: Duration = timedelta(seconds=5)
    state_dir: Path = Path("data/analytics-state")
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535, description="health and /metrics; 0: a free port")] = 8093
    lag_interval: Duration = timedelta(seconds=5)
    # Extra librdkafka properties of its consumer: ANALYTICS_CONSUMER_CONFIG__SESSION_TIMEOUT_MS=6000
    # becomes session.timeout.ms=6000 (as KAFKA_PRODUCER_CONFIG__* does for the service's producer).
    consumer_config: dict[str, str] = Field(default_factory=dict)

    @field_validator("consumer_config", mode="after")
    @classmethod
    def _librdkafka_names(cls, value: dict[str, str]) -> dict[str, str]:
        return librdkafka_names(value)

    @field_validator("learner_topic", "item_topic", "session_topic", "dlq_topic", mode="after")
    @classmethod
    def _topic_name(cls, value: str) -> str:
        return check_topic_name(value)

    @property
    def aggregate_set(self) -> frozenset[str]:
        return frozenset(item.strip() for item in self.aggregates.split(",") if item.strip())

    @model_validator(mode="after")
    def _known_aggregates(self) -> AnalyticsSettings:
        unknown = self.aggregate_set - {"learner", "item", "sessions"}
        if unknown or not self.aggregate_set:
            raise ValueError(
                f"ANALYTICS_AGGREGATES: {', '.join(sorted(unknown)) or 'empty'}; "
                "choose from learner, item, sessions"
            )
        if self.window <= timedelta(0) or self.grace < timedelta(0):
            raise ValueError("ANALYTICS_WINDOW must be positive and ANALYTICS_GRACE not negative")
        return self

    @property
    def window_ms(self) -> int:
        return int(self.window.total_seconds() * 1000)

    @property
    def grace_ms(self) -> int:
        return int(self.grace.total_seconds() * 1000)

    @property
    def transaction_timeout_ms(self) -> int:
        """How long the broker keeps an exactly-once transaction open before aborting it. A
        transaction lasts one commit interval (plus its commit); a process killed in the middle
        leaves its transaction open, and until the broker aborts it the group's offsets for those
        partitions are unstable: the next owner cannot read them (Quix gives up after 30 s and the
        process exits). librdkafka's default (60 s) outlasted that; Kafka Streams uses 10 s."""
        return int((self.commit_interval + timedelta(seconds=10)).total_seconds() * 1000)


def load_analytics_settings(**overrides: object) -> AnalyticsSettings:
    """Read the settings; on a bad value raise SettingsError with one line per bad variable."""
    try:
        return AnalyticsSettings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = [_describe(dict(error)) for error in exc.errors(include_url=False)]
        named = [line.replace("invalid setting ", "invalid setting ANALYTICS_", 1) for line in lines]
        raise SettingsError("\n".join(named)) from None
