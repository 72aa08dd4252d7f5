"""The router: applies the rule list to an event and answers where it goes."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from app.events.models import BaseEvent
from app.routing.rules import RoutingRule


@dataclass(frozen=True, slots=True)
class Route:
    """Where one event goes: de-duplicated topics in rule order, and the rules that sent it there."""

    topics: tuple[str, ...]
    rule_ids: tuple[str, ...]

    @property
    def unrouted(self) -> bool:
        return not self.topics


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
        topics: dict[str, None] = {}
        matched: list[str] = []
        for rule in self._rules:
            if rule.matches(event):
                matched.append(rule.id)
                topics.update(dict.fromkeys(rule.topics))
        return Route(topics=tuple(topics), rule_ids=tuple(matched))
