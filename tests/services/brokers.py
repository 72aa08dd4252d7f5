"""Which broker the tests start, decided here and nowhere else.

TEST_BROKER=tansu (default, `make test`): the development broker, Tansu, memory only.
TEST_BROKER=kafka (`make test-kafka`): Apache Kafka from Maven Central, one node per broker the
tests start (KAFKA_LOCAL_BROKERS=3 makes the session's shared broker a three-node cluster).

Both kinds have the same methods (start, stop, pause, resume, kill, bootstrap, pid), so a fault test
is written once. Where the two behave differently a test asks `is_tansu()`; docs/brokers.md lists
each difference and what the service does about it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

from app.devbroker import DevBroker, free_port
from tests.services.apache_kafka import KafkaCluster


class Broker(Protocol):
    """A broker (or cluster) a test started and can break."""

    @property
    def bootstrap(self) -> str: ...

    @property
    def pid(self) -> int | None: ...

    def start(self) -> Broker: ...

    def stop(self) -> None: ...

    def pause(self) -> None: ...

    def resume(self) -> None: ...

    def kill(self) -> None: ...


def kind() -> str:
    chosen = os.environ.get("TEST_BROKER", "tansu")
    if chosen not in ("tansu", "kafka"):
        raise ValueError(f"TEST_BROKER must be tansu or kafka, not {chosen!r}")
    return chosen


def is_tansu() -> bool:
    return kind() == "tansu"


def new_broker(directory: Path, size: int = 1) -> Broker:
    """A broker of the configured kind in `directory` on free 127.0.0.1 ports, not started yet."""
    if is_tansu():
        if size != 1:
            raise ValueError("the development broker has a single node")
        return DevBroker(free_port(), log_path=directory / "tansu.log")
    return KafkaCluster(directory / "kafka", size=size)


def shared_size() -> int:
    """Nodes of the session's shared broker (KAFKA_LOCAL_BROKERS, Apache Kafka only)."""
    return 1 if is_tansu() else int(os.environ.get("KAFKA_LOCAL_BROKERS", "1"))
