"""Routing rules in the database: the table the admin API edits, and its version counter.

Every change bumps the version in the same transaction; every worker and instance polls the version
and reloads the whole set when it moved, so a change reaches all of them within a poll interval.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import Engine, delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from app.audit.trail import Actor, AuditEntry
from app.background import BackgroundLoop
from app.database.schema import RoutingRulesVersion, StoredRoutingRule
from app.database.version_counter import bump_version, read_version, version_in
from app.routing.governance import TopicPolicy
from app.routing.router import Router
from app.routing.rules import RoutingRule

logger = logging.getLogger(__name__)


class RuleStore:
    """The `routing_rules` table and its version (synchronous; callers use asyncio.to_thread)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def version(self) -> int:
        return read_version(self.engine, RoutingRulesVersion)

    def load(self) -> tuple[int, list[RoutingRule]]:
        with Session(self.engine) as session:
            # The counter first: a change committed between the two reads leaves it behind, so the
            # next poll reloads (read after the rules, it could hide that change for good).
            version = version_in(session, RoutingRulesVersion)
            bodies = session.scalars(select(StoredRoutingRule.body).order_by(StoredRoutingRule.id))
            return version, [RoutingRule.model_validate(body) for body in bodies]

    def seed(self, rules: Sequence[RoutingRule]) -> bool:
        """Write the initial rules if the table was never written (version 0); True if it did.

        Workers and instances start together on an empty database: the row lock cannot guard a row
        that does not exist yet, so the loser of that race gets an IntegrityError and leaves the
        seeding to the winner.
        """
        try:
            with Session(self.engine) as session, session.begin():
                if session.get(RoutingRulesVersion, 1, with_for_update=True) is not None:
                    return False
                now = datetime.now(UTC)
                session.add(RoutingRulesVersion(id=1, version=1, updated_at=now))
                session.add_all(
                    StoredRoutingRule(id=rule.id, body=rule.model_dump(mode="json"), updated_at=now)
                    for rule in rules
                )
        except IntegrityError:
            return False
        return True

    def save(self, rule: RoutingRule, actor: Actor) -> AuditEntry:
        """Insert or replace one rule, bump the version and record the change, in one transaction."""
        with Session(self.engine) as session, session.begin():
            now = datetime.now(UTC)
            bump_version(session, RoutingRulesVersion, now)
            stored = session.get(StoredRoutingRule, rule.id)
            body = rule.model_dump(mode="json")
            if stored is None:
                session.add(StoredRoutingRule(id=rule.id, body=body, updated_at=now))
                entry = AuditEntry(actor, "routing_rule.create", rule.id, None, body)
            else:
                entry = AuditEntry(actor, "routing_rule.update", rule.id, stored.body, body)
                stored.body, stored.updated_at = body, now
            entry.add(session)
            return entry

    def delete(self, rule_id: str, actor: Actor) -> AuditEntry | None:
        """Remove one rule, bump the version and record the change; None when there was no such rule."""
        with Session(self.engine) as session, session.begin():
            stored = session.get(StoredRoutingRule, rule_id)
            if stored is None:
                return None
            entry = AuditEntry(actor, "routing_rule.delete", rule_id, stored.body, None)
            session.execute(delete(StoredRoutingRule).where(StoredRoutingRule.id == rule_id))
            bump_version(session, RoutingRulesVersion, datetime.now(UTC))
            entry.add(session)
            return entry


class RuleSync:
    """Keeps this worker's Router equal to the table: loads at start, then polls the version."""

    def __init__(self, store: RuleStore, router: Router, policy: TopicPolicy, interval: float) -> None:
        self.store = store
        self.router = router
        self.policy = policy
        self.version = 0
        self._loop = BackgroundLoop(
            "routing-rules-sync", self._poll, interval, delay_first=True, logger=logger
        )
        self.lock = asyncio.Lock()  # one admin change at a time in this worker

    async def start(self, initial: Sequence[RoutingRule]) -> None:
        for rule in initial:
            self.policy.check(rule)
        if await asyncio.to_thread(self.store.seed, initial):
            logger.info("routing rules seeded", extra={"rules": [rule.id for rule in initial]})
        await self.reload()
        self._loop.start()

    async def stop(self) -> None:
        await self._loop.stop()

    async def save(self, rule: RoutingRule, actor: Actor) -> bool:
        """Save a rule (checked by the caller) and apply it here at once; True when it is new."""
        async with self.lock:
            entry = await asyncio.to_thread(self.store.save, rule, actor)
            await self.reload()
        return entry.before is None

    async def delete(self, rule_id: str, actor: Actor) -> bool:
        """Delete a rule and apply that here at once; False when there was no such rule."""
        async with self.lock:
            entry = await asyncio.to_thread(self.store.delete, rule_id, actor)
            if entry is None:
                return False
            await self.reload()
        return True

    async def reload(self) -> None:
        version, rules = await asyncio.to_thread(self.store.load)
        self.router.replace_rules(rules)  # one assignment: requests see the old set or the new one
        self.version = version

    async def _poll(self) -> None:
        if await asyncio.to_thread(self.store.version) != self.version:
            await self.reload()
            logger.info("routing rules reloaded", extra={"version": self.version})
