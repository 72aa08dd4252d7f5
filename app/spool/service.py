"""The spool as the publisher sees it: async, with cached stats so the hot path skips the database,
and one transaction for the spool writes of the requests that arrive together."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime

from app.database.group_commit import GroupCommit, in_thread
from app.spool.store import NewRecord, SpoolStats, SpoolStore

# The table is counted before a write only when the cached depth is within this share of
# SPOOL_MAX_RECORDS: the cache lags other workers' writes by up to a relay round, and counting a
# deep spool on every write is what slowed spooling during an outage.
COUNT_ABOVE_SHARE = 0.9


class Spool:
    """Async face of SpoolStore. `stats` is refreshed by the relay and kept up to date locally."""

    def __init__(self, store: SpoolStore, on_added: Callable[[int], None] | None = None) -> None:
        self.store = store
        self.stats = SpoolStats(depth=0, oldest=None)
        self._on_added = on_added
        self.added = asyncio.Event()  # wakes the relay
        self._commits: GroupCommit[Sequence[NewRecord], bool] = GroupCommit(
            in_thread(self._write), "spool-writer", self._written
        )
        self._added_total = 0  # records this process has spooled, ever (see refresh)

    async def add(self, records: Sequence[NewRecord]) -> None:
        """Write records durably (raises SpoolFullError over capacity); returns once committed.

        Group commit: while one transaction is being written, the records of the requests arriving
        meanwhile wait and go together in the next one. During an outage every request spools, and
        one commit per request made the requests queue for the database one by one.
        """
        if not records:
            return
        if not await self._commits.submit(records):
            raise self.store.full_error(None)

    def _write(self, batch: Sequence[Sequence[NewRecord]]) -> list[bool]:
        """One transaction for the requests' records (in a thread); whether each request's went in."""
        incoming = sum(len(records) for records in batch)
        depth = self.stats.depth
        known = depth if depth + incoming <= self.store.max_records * COUNT_ABOVE_SHARE else None
        return self.store.add_groups(batch, known)

    def _written(self, batch: Sequence[Sequence[NewRecord]], stored: Sequence[bool]) -> None:
        added = sum(len(records) for records, went_in in zip(batch, stored, strict=True) if went_in)
        if added:
            self._added_total += added
            self.stats = SpoolStats(self.stats.depth + added, self.stats.oldest or datetime.now(UTC))
            if self._on_added is not None:
                self._on_added(added)
            self.added.set()

    def removed(self, count: int) -> None:
        """The relay delivered `count` records (the oldest age is known again at the next refresh)."""
        depth = max(0, self.stats.depth - count)
        # An empty spool has no oldest record: never report an age with a depth of 0.
        self.stats = SpoolStats(depth, self.stats.oldest if depth else None)

    async def keys_with_backlog(self, keys: Iterable[bytes]) -> set[bytes]:
        """Keys with spooled records; skips the database while the spool is known to be empty."""
        if self.stats.depth <= 0:
            return set()
        return await asyncio.to_thread(self.store.keys_with_backlog, keys)

    def stats_oldest_age(self) -> float:
        return self.stats.oldest_age_seconds()

    async def refresh(self) -> SpoolStats:
        """Read depth and oldest age from the database.

        Records spooled while the count runs may or may not be in it, so then the depth kept is
        the larger of the count and the cached depth (which has them). Taking the count alone,
        understated to 0, let a user's next event skip the backlog check and overtake the
        spooled one before it; adding them on top counted some twice.
        """
        added_before = self._added_total
        stats = await asyncio.to_thread(self.store.stats)
        if self._added_total != added_before:
            stats = SpoolStats(max(stats.depth, self.stats.depth), stats.oldest or self.stats.oldest)
        self.stats = stats
        return stats
