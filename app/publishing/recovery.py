"""Deliveries back within seconds of Kafka answering again after an outage.

Without this, recovery waited on three clocks at once: an idempotent producer whose requests timed
out could stay wedged until the broker fenced it (about 30 s on the development broker; after a
broker restart it never recovered), the open circuit breaker waited out its reset timeout, and
spooled records their backoff. Here, once a record has timed out, the cluster is probed every
`probe_interval`; when it answers, the producer is replaced by a fresh one (a new producer id: no
stale sequence numbers), the breaker lets a trial through at once, and every spooled record is due
now. The replaced producer's records fail as an outage and are spooled or retried with the same
event ids, so nothing is lost; a record the broker had written before it stalled may be written
again (at least once, after a fault).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from app.publishing.breaker import DeliveryBreaker
from app.publishing.producer import AsyncProducer
from app.spool.service import Spool

logger = logging.getLogger(__name__)


class OutageRecovery:
    """One background task per worker process."""

    def __init__(
        self,
        producer: AsyncProducer,
        breaker: DeliveryBreaker,
        spool: Spool,
        *,
        probe_interval: float,
        probe_timeout: float,
        min_replace_interval: float,
    ) -> None:
        self.producer = producer
        self.breaker = breaker
        self.spool = spool
        self._probe_interval = probe_interval
        self._probe_timeout = probe_timeout
        # While the cluster answers but cannot take writes (fewer than min.insync.replicas brokers),
        # records keep timing out: replace at most once per message timeout, not in a loop.
        self._min_replace_interval = min_replace_interval
        self._last_recovery = -1e9
        self.recoveries = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="outage-recovery")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        while True:
            await self.producer.timed_out.wait()
            try:
                wait = self._min_replace_interval - (time.monotonic() - self._last_recovery)
                if wait <= 0 and await asyncio.to_thread(
                    self.producer.cluster_reachable, self._probe_timeout
                ):
                    await self.recover()
                    continue
            except Exception:  # a failed probe or database hiccup: try again next round
                logger.exception("outage recovery round failed")
            await asyncio.sleep(max(self._probe_interval, wait if wait > 0 else 0.0))

    async def recover(self) -> None:
        """Kafka answers again: a fresh producer, a trial through the breaker, the spool due now."""
        self._last_recovery = time.monotonic()
        self.recoveries += 1
        self.producer.replace("records timed out and the cluster answers again: a fresh producer")
        self.breaker.allow_trial()
        due = await asyncio.to_thread(self.spool.store.make_due)
        self.spool.added.set()  # the relay drains now, not at its next tick
        logger.warning("recovering from a Kafka outage", extra={"spooled_records_due": due})
