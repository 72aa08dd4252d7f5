"""The router: applies the rule list to an event and answers where it goes."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from app.routing.rules import RoutingRule
from event_models.models import BaseEvent


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
    # Read for every event (its answer, its idempotency record): built once with the Route.
    topics: tuple[str, ...] = field(init=False)
    unrouted: bool = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "topics", tuple(destination.topic for destination in self.destinations))
        object.__setattr__(self, "unrouted", not self.destinations)


MAX_CACHED_ROUTES = 1024


class _RuleTable:
    """One rule list, indexed by event type, with the Route of each set of matching rules built once."""

    __slots__ = ("by_type", "routes", "rules", "unrouted")

    def __init__(self, rules: tuple[RoutingRule, ...]) -> None:
        self.rules = rules
        by_type: dict[str, list[RoutingRule]] = {}
        for rule in rules:
            if rule.enabled:
                for event_type in rule.event_types:
                    by_type.setdefault(event_type, []).append(rule)
        self.by_type = {event_type: _TypeRules(tuple(found), self) for event_type, found in by_type.items()}
        self.routes: dict[tuple[str, ...], Route] = {}
        self.unrouted = self.route_for(())

    def route_for(self, matched: tuple[str, ...]) -> Route:
        route = self.routes.get(matched)
        if route is None:
            rules = {rule.id: rule for rule in self.rules}
            destinations: dict[str, Destination] = {}
            for rule in (rules[rule_id] for rule_id in matched):
                for topic in rule.topics:
                    if topic not in destinations:  # the higher-priority rule's templates win
                        destinations[topic] = Destination(
                            topic, rule.id, rule.key_template, rule.message_template
                        )
            route = Route(tuple(destinations.values()), matched)
            if len(self.routes) < MAX_CACHED_ROUTES:  # conditions on many rules: bounded, still right
                self.routes[matched] = route
        return route


class _TypeRules:
    """The rules of one event type. A rule without a condition always matches, so only the
    conditions are tested for an event, and the Route of each combination of their outcomes is
    looked up, not rebuilt (a type without conditions has one Route)."""

    __slots__ = ("conditions", "routes", "rules", "table")

    def __init__(self, rules: tuple[RoutingRule, ...], table: _RuleTable) -> None:
        self.rules = rules
        self.conditions = tuple(rule.condition for rule in rules if rule.condition is not None)
        self.routes: dict[tuple[bool, ...], Route] = {}
        self.table = table

    def route(self, event: BaseEvent) -> Route:
        outcomes = tuple([condition.matches(event) for condition in self.conditions])
        route = self.routes.get(outcomes)
        if route is None:
            tested = iter(outcomes)  # in rule order, one per rule with a condition
            matched = tuple(rule.id for rule in self.rules if rule.condition is None or next(tested))
            route = self.table.route_for(matched)
            if len(self.routes) < MAX_CACHED_ROUTES:
                self.routes[outcomes] = route
        return route


class Router:
    """Holds an immutable, sorted rule list; replacing it is one atomic assignment.

    Routing runs for every event, so only the rules of an event's type are tested, and the
    Route of each set of matching rules is built once per rule list and reused.
    """

    __slots__ = ("_table",)

    def __init__(self, rules: Iterable[RoutingRule]) -> None:
        self._table = _RuleTable(())
        self.replace_rules(rules)

    @property
    def rules(self) -> tuple[RoutingRule, ...]:
        return self._table.rules

    def replace_rules(self, rules: Iterable[RoutingRule]) -> None:
        ordered = tuple(sorted(rules, key=lambda rule: (rule.priority, rule.id)))
        ids = [rule.id for rule in ordered]
        if len(ids) != len(set(ids)):
            raise ValueError("routing rule ids must be unique")
        self._table = _RuleTable(ordered)

    def route(self, event: BaseEvent) -> Route:
        table = self._table  # one snapshot for the whole event, whatever replaces it meanwhile
        rules = table.by_type.get(event.event_type)
        return table.unrouted if rules is None else rules.route(event)
