"""Workers starting together on an empty database: one seeds the rules, none fails."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy import Engine

from app.audit.trail import SYSTEM
from app.config.settings import load_settings
from app.database.engine import create_database_engine
from app.publishing.pause import PauseSwitch
from app.routing.rules import default_rules
from app.routing.store import RuleStore

T = TypeVar("T")


def _all_at_once(engines: list[Engine], work: Callable[[Engine], T]) -> tuple[list[T], list[BaseException]]:
    """Run `work` once per engine, in threads released together; its results and its failures."""
    results: list[T] = []
    errors: list[BaseException] = []
    start = threading.Barrier(len(engines))

    def run(engine: Engine) -> None:
        start.wait()
        try:
            results.append(work(engine))
        except BaseException as exc:  # the failure these tests are about
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(engine,)) for engine in engines]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results, errors


def test_concurrent_seeding_writes_once_and_fails_no_one(database_url: str) -> None:
    rules = default_rules(load_settings(_env_file=None))
    engines = [create_database_engine(database_url) for _ in range(6)]
    try:
        results, errors = _all_at_once(engines, lambda engine: RuleStore(engine).seed(rules))
        assert errors == []
        assert results.count(True) == 1
        version, stored = RuleStore(engines[0]).load()
        assert version == 1
        assert [rule.id for rule in stored] == sorted(rule.id for rule in rules)
    finally:
        for engine in engines:
            engine.dispose()


def test_concurrent_first_pause_fails_no_one(database_url: str) -> None:
    engines = [create_database_engine(database_url) for _ in range(4)]
    try:
        _, errors = _all_at_once(engines, lambda engine: PauseSwitch(engine).set(True, SYSTEM))
        assert errors == []
        assert PauseSwitch(engines[0]).refresh() is True
    finally:
        for engine in engines:
            engine.dispose()
