"""`SingleEventGroups`: the single events of one loop turn are published together, each
submitter getting its own outcome (the publishing itself is a fake here: the integration tests
publish for real)."""

from __future__ import annotations

import asyncio
import contextvars
import uuid
from datetime import UTC, datetime

import pytest

from app.ingest.single_events import MAX_GROUP, AckLevel, SingleEventGroups, WaitingEvent
from event_models.models import ActivityEvent

REQUEST = contextvars.ContextVar[str | None]("REQUEST", default=None)


def _waiting(name: str) -> WaitingEvent:
    event = ActivityEvent(
        user_id=name, occurred_at=datetime.now(UTC), activity_type="lesson_opened", event_id=uuid.uuid4()
    )
    return WaitingEvent(event, [], traceparent=None)


class Publisher:
    """Records each group it is given; answers each event with its user id and the group's size."""

    def __init__(self, fail: Exception | None = None) -> None:
        self.groups: list[tuple[list[str], AckLevel, str | None]] = []
        self.fail = fail

    async def __call__(self, waiting: list[WaitingEvent], ack: AckLevel) -> list[str]:
        self.groups.append(([item.event.user_id for item in waiting], ack, REQUEST.get()))
        await asyncio.sleep(0)
        if self.fail is not None:
            raise self.fail
        return [f"{item.event.user_id}/{len(waiting)}" for item in waiting]


async def _submit(groups: SingleEventGroups[str], name: str, ack: AckLevel = "kafka") -> str:
    REQUEST.set(name)  # as a request would set its id
    return await groups.submit(_waiting(name), ack)


async def test_the_events_of_one_loop_turn_are_published_together_each_with_its_outcome() -> None:
    publisher = Publisher()
    groups = SingleEventGroups(publisher)

    outcomes = await asyncio.gather(*(_submit(groups, f"u{n}") for n in range(5)))
    later = await _submit(groups, "late")

    assert outcomes == [f"u{n}/5" for n in range(5)]
    assert later == "late/1"  # a quiet moment: a group of one
    assert [names for names, _, _ in publisher.groups] == [[f"u{n}" for n in range(5)], ["late"]]


async def test_ack_levels_are_published_apart() -> None:
    publisher = Publisher()
    groups = SingleEventGroups(publisher)

    await asyncio.gather(_submit(groups, "a"), _submit(groups, "b", "spool"), _submit(groups, "c"))

    assert sorted((names, ack) for names, ack, _ in publisher.groups) == [
        (["a", "c"], "kafka"),
        (["b"], "spool"),
    ]


async def test_a_group_is_bounded() -> None:
    publisher = Publisher()
    groups = SingleEventGroups(publisher)

    outcomes = await asyncio.gather(*(_submit(groups, f"u{n}") for n in range(MAX_GROUP + 3)))

    assert [len(names) for names, _, _ in publisher.groups] == [MAX_GROUP, 3]
    assert outcomes[0] == f"u0/{MAX_GROUP}"
    assert outcomes[-1] == f"u{MAX_GROUP + 2}/3"


async def test_a_failure_reaches_every_request_of_the_group() -> None:
    groups = SingleEventGroups(Publisher(fail=RuntimeError("spool unavailable")))

    outcomes = await asyncio.gather(*(_submit(groups, f"u{n}") for n in range(3)), return_exceptions=True)

    assert [str(outcome) for outcome in outcomes] == ["spool unavailable"] * 3


async def test_a_cancelled_request_leaves_the_others_their_outcomes() -> None:
    publisher = Publisher()
    groups = SingleEventGroups(publisher)

    first = asyncio.create_task(_submit(groups, "gone"))
    second = asyncio.create_task(_submit(groups, "stays"))
    await asyncio.sleep(0)  # both submitted, the group not yet published
    first.cancel()

    assert await second == "stays/2"  # the cancelled request's event was published all the same
    with pytest.raises(asyncio.CancelledError):
        await first


async def test_a_group_does_not_run_in_any_one_request_s_context() -> None:
    publisher = Publisher()
    groups = SingleEventGroups(publisher)

    await asyncio.gather(_submit(groups, "a"), _submit(groups, "b"))

    assert publisher.groups[0][2] is None  # its log lines carry no request id
