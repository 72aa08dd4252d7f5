"""The relay: drains the spool to Kafka in spool order once the breaker lets deliveries through.

A row is deleted only after Kafka acknowledged it, so a crash between sending and deleting repeats
the record (at least once, same event_id) and never loses it. Rows older than SPOOL_MAX_AGE or tried
SPOOL_MAX_ATTEMPTS times go to the dead-letter topic instead.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from datetime import UTC, datetime, timedelta
from functools import partial

from app.background import BackgroundLoop
from app.database.schema import SpooledRecord
from app.observability.publisher_metrics import PublisherMetrics
from app.publishing.breaker import DeliveryBreaker
from app.publishing.delivery import (
    ACK_GRACE_SECONDS,
    ProducedRecord,
    RecordSender,
    count_acknowledged,
    dead_letter,
    sort_reports,
)
from app.publishing.errors import BrokerUnavailableError, DeliveryError
from app.publishing.pause import PauseSwitch
from app.publishing.retry import RetryPolicy
from app.spool.service import Spool

logger = logging.getLogger(__name__)


class SpoolRelay:
    """One background task per worker process; rows are claimed, so several relays can share a spool."""

    def __init__(
        self,
        spool: Spool,
        producer: RecordSender,
        breaker: DeliveryBreaker,
        metrics: PublisherMetrics,
        retry: RetryPolicy,
        *,
        dlq_topic: str,
        interval: float,
        batch_size: int,
        lease: timedelta,
        max_age: timedelta,
        max_attempts: int,
        ack_timeout: float,
        pause: PauseSwitch,
    ) -> None:
        self.spool = spool
        self.producer = producer
        self.breaker = breaker
        self.metrics = metrics
        self.retry = retry
        self.dlq_topic = dlq_topic
        self.owner = f"{socket.gethostname()[:50]}:{os.getpid()}"
        self._batch_size = batch_size
        self._lease = lease
        self._max_age = max_age
        self._max_attempts = max_attempts
        self._ack_timeout = ack_timeout
        self.pause = pause
        # A round that delivered something is followed by another at once (more may be due);
        # otherwise the next waits for SPOOL_RELAY_INTERVAL or a spool write, whichever comes first.
        self._loop = BackgroundLoop(
            "spool-relay", self.drain_once, interval, wake=spool.added, again_now=bool, logger=logger
        )

    def start(self) -> None:
        self._loop.start()

    async def release_dead_claims(self) -> int:
        """Free rows claimed by relays of this host whose process is gone (a SIGKILLed worker):
        they need not wait for SPOOL_CLAIM_LEASE. Claims of other hosts wait for their lease."""
        owners = await asyncio.to_thread(self.spool.store.claim_owners)
        host = socket.gethostname()[:50]
        dead = [owner for owner in owners if _is_dead_local_owner(owner, host)]
        released = await asyncio.to_thread(self.spool.store.release_claims_of, dead)
        if released:
            logger.warning("released claims of dead relays", extra={"owners": dead, "records": released})
        return released

    async def stop(self) -> None:
        """Let a round in progress finish (its records acknowledged or released), then stop."""
        await self._loop.stop(grace=self._ack_timeout + 5)

    async def drain_once(self) -> int:
        """One round: refresh the stats, claim due rows, deliver them. Returns rows delivered."""
        stats = await self.spool.refresh()
        self.metrics.refresh_live_values()
        if await asyncio.to_thread(self.pause.refresh):
            return 0
        if stats.depth == 0 or self.breaker.rejecting():  # the relay may be the trial once it is due
            return 0
        rows = await asyncio.to_thread(self.spool.store.claim_due, self.owner, self._batch_size, self._lease)
        if not rows:
            return 0
        try:
            async with self.breaker.guard() as attempt:
                delivered, outage = await self._deliver(rows)
                if outage:
                    attempt.failed(outage)
        except BrokerUnavailableError:
            retry_at = datetime.now(UTC) + timedelta(seconds=self.breaker.retry_after())
            await asyncio.to_thread(
                partial(self.spool.store.release, attempted=False),
                [row.id for row in rows],
                "circuit breaker open",
                retry_at,
            )
            return 0
        return delivered

    async def _deliver(self, rows: list[SpooledRecord]) -> tuple[int, str]:
        now = datetime.now(UTC)
        sent: list[ProducedRecord] = []
        for row in rows:
            if row.dlq_reason is None and self._expired(row, now):
                row.dlq_reason = (
                    f"spool_expired after {row.attempts} attempt(s): {row.last_error or row.reason}"
                )
            headers: list[tuple[str, str]] = [(name, value) for name, value in row.headers]
            if row.dlq_reason:
                reason, attempts = row.dlq_reason, row.attempts + 1
                sent.append(
                    dead_letter(self.dlq_topic, row.topic, row.key, row.value, headers, reason, attempts)
                )
            else:
                sent.append((row.topic, row.value, row.key, headers))
        delivery = self.producer.send(sent)
        await delivery.wait(self._ack_timeout + ACK_GRACE_SECONDS)
        reports = sort_reports(delivery)

        done = [rows[index].id for index in reports.acknowledged]
        for index in reports.acknowledged:
            if sent[index][0] == self.dlq_topic:
                self.metrics.record_dlq(rows[index].topic)
        reports.latencies.pop(self.dlq_topic, None)  # dead letters are counted as such, not published
        count_acknowledged(self.metrics, reports.latencies)
        # A full producer queue is backpressure: released for a later round, like an outage.
        unsent = [(index, DeliveryError(sent[index][0], -1, "QUEUE_FULL", str(full), True))
                  for index, full in reports.queue_full]  # fmt: skip
        to_dlq: list[tuple[int, str]] = []
        failed: list[tuple[SpooledRecord, DeliveryError]] = []
        for index, error in sorted([*reports.outage, *reports.permanent, *unsent]):
            self.metrics.record_failed(error.topic, error.name)
            if not error.retriable and sent[index][0] != self.dlq_topic:
                to_dlq.append((rows[index].id, str(error)))
            else:
                failed.append((rows[index], error))

        await asyncio.to_thread(self.spool.store.delete, done)
        for row_id, reason in to_dlq:
            await asyncio.to_thread(self.spool.store.redirect_to_dlq, [row_id], reason)
        # Records lost with their producer (replaced by the outage recovery, or fenced) were not
        # refused by the cluster: no attempt counted, due again after the first retry delay.
        lost = [row.id for row, error in failed if error.producer_lost]
        failed = [(row, error) for row, error in failed if not error.producer_lost]
        if lost:
            retry_at = datetime.now(UTC) + timedelta(seconds=self.retry.delay(1))
            release = partial(self.spool.store.release, attempted=False)
            await asyncio.to_thread(release, lost, "producer replaced", retry_at)
        if failed:
            # One retry time for the round (from its most-tried row): one transaction, not one per row.
            attempts = max(row.attempts for row, _ in failed) + 1
            retry_at = datetime.now(UTC) + timedelta(seconds=self.retry.delay(attempts))
            await asyncio.to_thread(
                self.spool.store.release, [row.id for row, _ in failed], str(failed[0][1]), retry_at
            )
        if failed:
            logger.warning(
                "spool relay: records not delivered, will retry",
                extra={"records": len(failed), "reason": str(failed[0][1])},
            )
        if done:
            self.metrics.record_relayed(len(done))
            self.spool.removed(len(done))
            logger.info("spool relayed", extra={"records": len(done), "failed": len(failed)})
        outage = next((str(error) for _, error in failed if error.retriable), "")
        return len(done), outage

    def _expired(self, row: SpooledRecord, now: datetime) -> bool:
        created = row.created_at if row.created_at.tzinfo else row.created_at.replace(tzinfo=UTC)
        return now - created > self._max_age or row.attempts >= self._max_attempts


def _is_dead_local_owner(owner: str, host: str) -> bool:
    owner_host, _, pid = owner.rpartition(":")
    if owner_host != host or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, owned by another user
        return False
    return False
