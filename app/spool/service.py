"""The spool as the publisher sees it: async, with cached stats so the hot path skips the database."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime

from app.spool.store import NewRecord, SpoolStats, SpoolStore


class Spool:
    """Async face of SpoolStore. `stats` is refreshed by the relay and kept up to date locally."""

    def __init__(self, store: SpoolStore, on_added: Callable[[int], None] | None = None) -> None:
        self.store = store
        self.stats = SpoolStats(depth=0, oldest=None)
        self._on_added = on_added
        self.added = asyncio.Event()  # wakes the relay

    async def add(self, records: Sequence[NewRecord]) -> None:
        """Write records durably (raises SpoolFullError over capacity); returns once committed."""
        if not records:
            return
        await asyncio.to_thread(self.store.add, records)
        self.stats = SpoolStats(self.stats.depth + len(records), self.stats.oldest or datetime.now(UTC))
        if self._on_added is not None:
            self._on_added(len(records))
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
        self.stats = await asyncio.to_thread(self.store.stats)
        return self.stats
