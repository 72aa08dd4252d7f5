"""Workers starting together on an empty database: one seeds the rules, none fails."""

from __future__ import annotations

import threading

from app.config.settings import load_settings
from app.database.engine import create_database_engine
from app.publishing.pause import PauseSwitch
from app.routing.rules import default_rules
from app.routing.store import RuleStore


def test_concurrent_seeding_writes_once_and_fails_no_one(database_url: str) -> None:
    rules = default_rules(load_settings(_env_file=None))
    engines = [create_database_engine(database_url) for _ in range(6)]
    results: list[bool] = []
    errors: list[BaseException] = []
    start = threading.Barrier(len(engines))

    def seed(index: int) -> None:
        start.wait()
        try:
            results.append(RuleStore(engines[index]).seed(rules))
        except BaseException as exc:  # the failure this test is about
            errors.append(exc)

    threads = [threading.Thread(target=seed, args=(index,)) for index in range(len(engines))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    try:
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
    errors: list[BaseException] = []
    start = threading.Barrier(len(engines))

    def pause(index: int) -> None:
        start.wait()
        try:
            PauseSwitch(engines[index]).set(True)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=pause, args=(index,)) for index in range(len(engines))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    try:
        assert errors == []
        assert PauseSwitch(engines[0]).refresh() is True
    finally:
        for engine in engines:
            engine.dispose()
