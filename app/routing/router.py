"""The router: applies the rule list to an event and answers where it goes."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from app.events.models import BaseEvent
from app.routing.rules import RoutingRule


@dataclass(frozen=True, slots=True)
class Destination:
    """One topic an event goes to, with the templates of the first rule that named it."""

    topic: str
    rule_id: str
    key_template: str | None = None
    message_template: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Route:
    """Where one event goes: de-duplicated destinations in rule order, and the rules that matched."""

    destinations: tuple[Destination, ...]
    rule_ids: tuple[str, ...]

    @property
    def topics(self) -> tuple[str, ...]:
        return tuple(destination.topic for destination in self.destinations)

    @property
    def unrouted(self) -> bool:
        return not self.destinations


class Router:
    """Holds an immutable, sorted rule list; replacing it is one atomic assignment."""

    __slots__ = ("_rules",)

    def __init__(self, rules: Iterable[RoutingRule]) -> None:
        self._rules: tuple[RoutingRule, ...] = ()
        self.replace_rules(rules)

    @property
    def rules(self) -> tuple[RoutingRule, ...]:
        return self._rules

    def replace_rules(self, rules: Iterable[RoutingRule]) -> None:
        ordered = tuple(sorted(rules, key=lambda rule: (rule.priority, rule.id)))
        ids = [rule.id for rule in ordered]
        if len(ids) != len(set(ids)):
            raise ValueError("routing rule ids must be unique")
        self._rules = ordered

    def route(self, event: BaseEvent) -> Route:
        destinations: dict[str, Destination] = {}
        matched: list[str] = []
        for rule in self._rules:
            if rule.matches(event):
                matched.append(rule.id)
                for topic in rule.topics:
                    if topic not in destinations:  # the higher-priority rule's templates win
                        destinations[topic] = Destination(
                            topic, rule.id, rule.key_template, rule.message_template
                        )
        return Route(destinations=tuple(destinations.values()), rule_ids=tuple(matched))
