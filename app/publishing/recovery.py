"""Deliveries back within seconds of Kafka answering again after an outage.

Without this, recovery waited on three clocks at once: an idempotent producer whose requests timed
out could stay wedged until the broker fenced it (about 30 s on the development broker; after a
broker restart it never recovered), the open circuit breaker waited out its reset timeout, and
spooled records their backoff. And an outage began with every request waiting out the producer
timeout until the breaker opened.

Here, once a record has timed out or librdkafka reports every broker down, the cluster is probed
every `probe_interval`. While it does not answer, the breaker is held open (events go to the spool
at once, no trial waits out a timeout) and the producer's queue is handed back to the requests,
which spool it. When it answers again, the producer is replaced by a fresh one (a new producer id:
no stale sequence numbers), the breaker lets a trial through at once, and every spooled record is
due now. The replaced producer's records fail as an outage and are spooled or retried with the same
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
        self.down = False  # the probe found the cluster unreachable; the breaker is held open
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
            await _first_of(self.producer.timed_out, self.producer.all_brokers_down)
            try:
                await self._probe_round()
            except Exception:  # a failed probe or database hiccup: try again next round
                logger.exception("outage recovery round failed")
            await asyncio.sleep(self._probe_interval)

    async def _probe_round(self) -> None:
        if self.down:
            # Nothing the producer holds may go out when the probe reconnects it: a broker that
            # restarted without its state (the development broker) hands producer ids out anew, and
            # records sent under the old id would make it drop the next producer's as duplicates.
            self.producer.purge()
        reachable = await asyncio.to_thread(self.producer.cluster_reachable, self._probe_timeout)
        if not reachable:
            # Kafka is down: spool at once instead of letting each request wait out the producer
            # timeout, and hand back what the producer still queues (its requests spool it).
            if not self.down:
                self.down = True
                self.breaker.hold_open()
                logger.warning("Kafka unreachable: events go to the spool until it answers")
            self.producer.purge()
            return
        if self.producer.timed_out.is_set() or self.down:
            wait = self._min_replace_interval - (time.monotonic() - self._last_recovery)
            if wait <= 0 or self.down:
                await self.recover()
            return
        self.producer.all_brokers_down.clear()  # an idle disconnect: the cluster answers

    async def recover(self) -> None:
        """Kafka answers again: a fresh producer, a trial through the breaker, the spool due now."""
        self._last_recovery = time.monotonic()
        self.recoveries += 1
        self.down = False
        self.producer.replace("records timed out and the cluster answers again: a fresh producer")
        self.breaker.allow_trial()
        due = await asyncio.to_thread(self.spool.store.make_due)
        self.spool.added.set()  # the relay drains now, not at its next tick
        logger.warning("recovering from a Kafka outage", extra={"spooled_records_due": due})


async def _first_of(*events: asyncio.Event) -> None:
    """Until one of `events` is set."""
    if any(event.is_set() for event in events):
        return
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
