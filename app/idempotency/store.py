"""What every idempotency store does. The stores: one process's memory (memory_store.py), a file the
workers of a host share (host_store.py) and the database, shared by every instance (database_store.py).

A key is reserved before its event is published, so two concurrent copies cannot both publish;
it is completed with the answer given, or released when the event was not accepted (so a retry
after a 429/503 is processed, not answered as a duplicate).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

StoredResult = dict[str, Any]


KeyGroup = Sequence[tuple[str, StoredResult]]  # one event's keys, each with its provisional answer
Known = tuple[int, StoredResult]  # the position of a known key in its group, and its first answer


class IdempotencyStore(Protocol):
    """Reserve keys, then complete or release them; a whole request's keys in one call each.

    `reserve` takes one group of (key, provisional answer) pairs per event, in order, and
    returns for each group None when all its keys are now reserved, or the first known key's
    position and first answer, the group's other keys then left as they were (a key repeated
    within the call is known at its second use). `settle` stores final answers, frees the rest.
    """

    async def reserve(self, groups: Sequence[KeyGroup]) -> list[Known | None]: ...

    async def settle(self, completed: Mapping[str, StoredResult], released: Sequence[str]) -> None: ...

    async def purge_expired(self) -> int:
        """Remove keys whose window has passed (a background loop calls it now and then, so an idle
        service frees them too); how many."""
        ...

    async def close(self) -> None:
        """At shutdown: write what is pending, release what the store holds (its connections)."""
        ...


def reserve_groups(
    groups: Sequence[KeyGroup],
    reserve: Callable[[str, StoredResult], StoredResult | None],
    release: Callable[[str], None],
) -> list[Known | None]:
    """The group semantics of `IdempotencyStore.reserve` over one-key reserve and release."""
    answers: list[Known | None] = []
    for group in groups:
        taken: list[str] = []
        answer: Known | None = None
        for position, (key, provisional) in enumerate(group):
            known = reserve(key, provisional)
            if known is not None:
                for key_taken in taken:  # this event is not published: undo its reservations
                    release(key_taken)
                answer = (position, known)
                break
            taken.append(key)
        answers.append(answer)
    return answers


def assign_groups(
    groups: Sequence[KeyGroup], live: Mapping[str, StoredResult]
) -> tuple[list[Known | None], dict[str, StoredResult]]:
    """`IdempotencyStore.reserve`'s group semantics, given the keys already `live` elsewhere:
    the answer per group, and each key this call keeps with the provisional answer it keeps."""
    assigned: dict[str, StoredResult] = {}

    def take(key: str, provisional: StoredResult) -> StoredResult | None:
        known = live.get(key, assigned.get(key))
        if known is None:
            assigned[key] = provisional
        return known

    def give_back(key: str) -> None:
        assigned.pop(key, None)

    return reserve_groups(groups, take, give_back), assigned
