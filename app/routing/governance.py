"""Topic governance: a rule may only name a topic on the allow-list or following the naming convention."""

from __future__ import annotations

import re
from collections.abc import Iterable

from app.routing.rules import RoutingRule


class TopicPolicy:
    """KAFKA_ALLOWED_TOPICS (plus the service's own topics) and KAFKA_TOPIC_PATTERN."""

    def __init__(self, allowed: Iterable[str], pattern: str, environment: str) -> None:
        self.allowed = frozenset(allowed)
        self.pattern = pattern
        self.environment = environment

    def _pattern_for(self, event_type: str) -> re.Pattern[str]:
        text = self.pattern.replace("${env}", re.escape(self.environment)).replace(
            "${eventType}", re.escape(event_type)
        )
        return re.compile(text)

    def follows_convention(self, topic: str, event_type: str) -> bool:
        """Whether `topic` matches KAFKA_TOPIC_PATTERN for `event_type` (never, without a pattern)."""
        return bool(self.pattern) and self._pattern_for(event_type).fullmatch(topic) is not None

    def forbidden_topics(self, rule: RoutingRule) -> list[str]:
        """Topics of `rule` that are neither allowed by name nor by the convention (for all its event types)."""
        forbidden = []
        for topic in rule.topics:
            if topic in self.allowed:
                continue
            if self.pattern and all(self.follows_convention(topic, kind) for kind in rule.event_types):
                continue
            forbidden.append(topic)
        return forbidden

    def check(self, rule: RoutingRule) -> None:
        forbidden = self.forbidden_topics(rule)
        if forbidden:
            convention = f" nor follow KAFKA_TOPIC_PATTERN {self.pattern!r}" if self.pattern else ""
            raise ValueError(
                f"rule {rule.id!r}: topic(s) {', '.join(forbidden)} are not on KAFKA_ALLOWED_TOPICS{convention}"
            )
