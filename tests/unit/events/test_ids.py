"""Server-assigned event ids are random version-4 UUIDs, unique, and never shared with a forked child."""

from __future__ import annotations

import os
import uuid

from event_models.ids import new_event_id


def test_ids_are_version_4_uuids_that_round_trip_like_uuid4() -> None:
    for _ in range(1000):
        value = new_event_id()
        assert value.version == 4
        assert value.variant == uuid.RFC_4122
        assert uuid.UUID(str(value)) == value
        assert hash(value) == hash(uuid.UUID(str(value)))


def test_ids_are_unique_across_many_refills() -> None:
    ids = {new_event_id() for _ in range(20_000)}
    assert len(ids) == 20_000


def test_a_forked_child_does_not_reuse_the_parent_pool() -> None:
    new_event_id()  # the parent's pool now holds ids
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: report the next id and leave without running the test teardown
        os.write(write, str(new_event_id()).encode())
        os._exit(0)
    os.close(write)
    child_id = uuid.UUID(os.read(read, 64).decode())
    os.waitpid(pid, 0)
    parent_ids = {new_event_id() for _ in range(300)}
    assert child_id not in parent_ids
