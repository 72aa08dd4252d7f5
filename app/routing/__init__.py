"""Routing: declarative rules decide which Kafka topics an event goes to."""

from app.routing.conditions import Condition
from app.routing.router import Destination, Route, Router
from app.routing.rules import RoutingRule, default_rules

__all__ = ["Condition", "Destination", "Route", "Router", "RoutingRule", "default_rules"]
