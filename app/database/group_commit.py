"""Group commit: the database writes of requests that arrive while one is being written wait and go
together in the next, in one transaction (and, for a driver that blocks, one thread hop).

A transaction costs a few round trips (and, when durable, a flush to disk) whatever it holds: one
per request made concurrent requests queue for the database one by one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

logger = logging.getLogger(__name__)

Item = TypeVar("Item")
Outcome = TypeVar("Outcome")
Write = Callable[[Sequence[Item]], Awaitable[Sequence[Outcome]]]


def in_thread(write: Callable[[Sequence[Item]], Sequence[Outcome]]) -> Write[Item, Outcome]:
    """A blocking `write` (a driver without asyncio) as the coroutine GroupCommit awaits."""

    async def threaded(items: Sequence[Item]) -> Sequence[Outcome]:
        return await asyncio.to_thread(write, items)

    return threaded


class GroupCommit(Generic[Item, Outcome]):
    """Awaits `write` over the items submitted meanwhile, in submission order, one batch at a time.

    `write` gets a batch and returns one outcome per item; if it raises, every submitter of the
    batch gets the exception. Items are written in the order they were submitted, batch after batch.
    `written`, when given, is called on the event loop after each committed batch, before the next
    is written and whether or not its submitters still wait (a cancelled request's items count).
    """

    def __init__(
        self,
        write: Write[Item, Outcome],
        name: str,
        written: Callable[[Sequence[Item], Sequence[Outcome]], None] | None = None,
    ) -> None:
        self._write = write
        self._written = written
        self._name = name
        self._pending: list[tuple[Item, asyncio.Future[Outcome]]] = []
        self._writer: asyncio.Task[None] | None = None

    def submit(self, item: Item) -> asyncio.Future[Outcome]:
        """Queue `item`; the future resolves once its batch is committed."""
        done: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._pending.append((item, done))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write_pending(), name=self._name)
        return done

    async def drain(self) -> None:
        """Return once everything submitted so far is written (or has failed)."""
        while self._writer is not None and not self._writer.done():
            await asyncio.shield(self._writer)

    async def _write_pending(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                outcomes = await self._write([item for item, _ in batch])
            except Exception as error:  # the database failed: every submitter of the batch learns it
                for _, done in batch:
                    if not done.done():
                        done.set_exception(error)
                continue
            if self._written is not None:
                try:
                    self._written([item for item, _ in batch], outcomes)
                except Exception:  # bookkeeping only: the batch is committed, its submitters must learn it
                    logger.exception("after a group commit", extra={"writer": self._name})
            for (_, done), outcome in zip(batch, outcomes, strict=True):
                if not done.done():  # else its request was cancelled meanwhile
                    done.set_result(outcome)
