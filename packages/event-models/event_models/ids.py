"""Server-assigned event ids: random (version 4) UUIDs, as `uuid.uuid4()` makes them, at a fraction
of the cost.

pydantic calls the id factory once for every event that arrives without an id, so its per-call
cost is paid per event. `uuid.uuid4()` reads the randomness (one `os.urandom` call) and runs
`UUID.__init__`'s checks in Python for each id. Here the randomness is read 4 KiB at a time, the
UUIDs of a read are built together without re-checking what is known to be a valid 128-bit
version-4 value, and a call takes one from the pool. A forked child empties its copy of the pool
(`os.register_at_fork`), so it never hands out an id its parent will also hand out.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable

_IDS_PER_READ = 256
# Version 4 (bits 76-79 = 0100) and the RFC 4122 variant (bits 62-63 = 10), as uuid.uuid4() sets them.
_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))
_SET = (0x4000 << 64) | (0x8000 << 48)

_new_object = object.__new__
_set_attribute = object.__setattr__  # UUID forbids attribute assignment; its own __init__ does this
_UNKNOWN = uuid.SafeUUID.unknown


def _random_ids() -> list[uuid.UUID]:
    raw = os.urandom(16 * _IDS_PER_READ)
    ids = []
    for start in range(0, len(raw), 16):
        value = _new_object(uuid.UUID)
        _set_attribute(value, "int", (int.from_bytes(raw[start : start + 16]) & _CLEAR) | _SET)
        _set_attribute(value, "is_safe", _UNKNOWN)
        ids.append(value)
    return ids


def _id_factory() -> Callable[[], uuid.UUID]:
    pool: list[uuid.UUID] = []
    take = pool.pop

    def new_event_id() -> uuid.UUID:
        """A new random (version 4) UUID."""
        try:
            return take()
        except IndexError:
            pool.extend(_random_ids())
            return take()

    os.register_at_fork(after_in_child=pool.clear)
    return new_event_id


new_event_id = _id_factory()
