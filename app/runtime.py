"""The objects one app instance wires together, built once from Settings and handed to routes."""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry
from sqlalchemy import Engine

from app.audit.trail import SYSTEM, Actor, AuditTrail
from app.background import BackgroundLoop
from app.config.settings import Settings
from app.database.engine import check_schema, create_database_engine
from app.event_types.registry import EventTypeRegistry
from app.event_types.seed import EventTypeFile, load_event_type_files
from app.event_types.store import EventTypeStore
from app.events.time_window import EventTimeWindow
from app.idempotency.database_store import DatabaseIdempotencyStore
from app.idempotency.host_store import HostIdempotencyStore
from app.idempotency.memory_store import MemoryIdempotencyStore
from app.idempotency.store import IdempotencyStore
from app.ingest.service import IngestService
from app.observability.publisher_metrics import PublisherMetrics
from app.observability.service_view import REPORT_INTERVAL_SECONDS, WorkerReports, multiprocess_directory
from app.observability.tracing import Tracing, build_tracing
from app.publishing.breaker import STATE_VALUES, DeliveryBreaker
from app.publishing.pause import PauseSwitch
from app.publishing.producer import AsyncProducer
from app.publishing.publisher import EventPublisher
from app.publishing.recovery import OutageRecovery
from app.publishing.retry import RetryPolicy
from app.publishing.topic_admin import KafkaAdmin, TopicReport
from app.routing.governance import TopicPolicy
from app.routing.loading import initial_rules
from app.routing.router import Router
from app.routing.rules import default_rules
from app.routing.store import RuleStore, RuleSync
from app.security.key_store import ApiKeyStore, KeyRing
from app.security.rate_limit import RateLimiter
from app.serialization.codecs import serializer_for
from app.spool.relay import SpoolRelay
from app.spool.service import Spool
from app.spool.store import SpoolStore

logger = logging.getLogger(__name__)

TOPIC_CHECK_RETRY_SECONDS = 10.0


IDEMPOTENCY_PURGE_SECONDS = 60.0  # how often a worker removes expired idempotency keys


def idempotency_store(settings: Settings) -> IdempotencyStore:
    """The store IDEMPOTENCY_STORE names (`auto` resolved by the number of workers)."""
    kind = settings.idempotency_store_kind
    if kind == "database":
        return DatabaseIdempotencyStore.for_database(settings.sqlalchemy_url, settings.idempotency_window)
    if kind == "host":
        return HostIdempotencyStore(
            settings.data_dir / "idempotency", settings.idempotency_window, settings.idempotency_max_keys
        )
    return MemoryIdempotencyStore(settings.idempotency_window, settings.idempotency_max_keys)


class MissingTopicsError(Exception):
    """A routing rule names topics the cluster lacks, and the service may not create topics."""

    def __init__(self, topics: list[str]) -> None:
        super().__init__(f"topic(s) {', '.join(topics)} do not exist, and KAFKA_CREATE_TOPICS is false")
        self.topics = topics


class TopicsUnavailableError(Exception):
    """The cluster did not answer when a rule's topics were to be checked or created."""


@dataclass(slots=True)
class Readiness:
    """Cached answer to "can we reach Kafka?", so /readyz does not hit the broker on every probe."""

    ready: bool = False
    reason: str = "not started"
    checked_at: float = -1e9


@dataclass(slots=True)
class Runtime:
    """Everything a request needs; one per app (so tests can build many apps side by side)."""

    settings: Settings
    registry: CollectorRegistry
    metrics: PublisherMetrics
    router: Router
    breaker: DeliveryBreaker
    producer: AsyncProducer
    engine: Engine
    spool: Spool
    relay: SpoolRelay
    recovery: OutageRecovery
    publisher: EventPublisher
    ingest: IngestService
    rules: RuleSync
    event_types: EventTypeRegistry
    kafka_admin: KafkaAdmin
    keys: KeyRing
    audit: AuditTrail
    rate_limiter: RateLimiter
    tracing: Tracing
    topic_reports: dict[str, TopicReport] = field(default_factory=dict)
    # Several workers: each one's state, shared with the others for the whole-service view.
    worker_reports: WorkerReports | None = None
    background: set[asyncio.Task[None]] = field(default_factory=set)
    loops: list[BackgroundLoop[Any]] = field(default_factory=list)
    readiness: Readiness = field(default_factory=Readiness)
    shutting_down: bool = False

    @classmethod
    def build(cls, settings: Settings) -> Runtime:
        registry = CollectorRegistry()
        tracing = build_tracing(settings)
        metrics = PublisherMetrics(registry, settings.health_activity_window.total_seconds())
        breaker = DeliveryBreaker(
            settings.circuit_breaker_failure_threshold,
            settings.circuit_breaker_reset_timeout,
            on_change=lambda state: metrics.breaker_state.set(STATE_VALUES.get(state, 2)),
        )
        producer = AsyncProducer(
            settings.librdkafka_config(),
            on_replaced=lambda reason: metrics.record_producer_restart(),
            eager_below=settings.kafka_producer_eager_below,
        )
        engine = create_database_engine(settings.sqlalchemy_url)
        spool = Spool(SpoolStore(engine, settings.spool_max_records), on_added=metrics.record_spooled)
        retry = RetryPolicy(
            retries=settings.kafka_producer_retries,
            initial_delay=settings.kafka_retry_initial_delay.total_seconds(),
            max_delay=settings.kafka_retry_max_delay.total_seconds(),
            factor=settings.kafka_retry_factor,
            jitter=settings.kafka_retry_jitter,
        )
        ack_timeout = settings.kafka_producer_timeout.total_seconds()
        pause = PauseSwitch(engine)
        relay = SpoolRelay(
            spool,
            producer,
            breaker,
            metrics,
            retry,
            dlq_topic=settings.kafka_topic_dlq,
            interval=settings.spool_relay_interval.total_seconds(),
            batch_size=settings.spool_relay_batch,
            lease=settings.spool_claim_lease,
            max_age=settings.spool_max_age,
            max_attempts=settings.spool_max_attempts,
            ack_timeout=ack_timeout,
            pause=pause,
        )
        recovery = OutageRecovery(
            producer,
            breaker,
            spool,
            probe_interval=settings.kafka_recovery_probe_interval.total_seconds(),
            probe_timeout=1.0,
            min_replace_interval=ack_timeout,
        )
        router = Router(default_rules(settings))
        publisher = EventPublisher(
            producer,
            router,
            serializer_for(settings.kafka_serialization),
            metrics,
            breaker,
            spool,
            retry,
            pause,
            ack_timeout=ack_timeout,
            dlq_topic=settings.kafka_topic_dlq,
            max_record_bytes=settings.kafka_message_max_bytes,
            max_in_flight=settings.max_in_flight_records,
            fault_ack_deadline=settings.kafka_fault_ack_deadline.total_seconds(),
            tracing=tracing,
        )
        metrics.bind_live_values(
            {
                metrics.queue_length: producer.queue_length,
                metrics.in_flight: lambda: publisher.in_flight,
                metrics.spool_depth: lambda: spool.stats.depth,
                metrics.spool_oldest_age: spool.stats_oldest_age,
            }
        )
        idempotency = idempotency_store(settings)
        time_window = EventTimeWindow(settings.event_max_age, settings.event_max_future_skew)
        event_types = EventTypeRegistry(
            EventTypeStore(engine, settings.event_types_max),
            settings.routing_rules_poll_interval.total_seconds(),
        )
        ingest = IngestService(publisher, idempotency, metrics, time_window, event_types.get)
        policy = TopicPolicy(settings.allowed_topics, settings.kafka_topic_pattern, settings.environment)
        rules = RuleSync(
            RuleStore(engine), router, policy, settings.routing_rules_poll_interval.total_seconds()
        )
        return cls(
            settings=settings,
            registry=registry,
            metrics=metrics,
            router=router,
            breaker=breaker,
            producer=producer,
            engine=engine,
            spool=spool,
            relay=relay,
            recovery=recovery,
            publisher=publisher,
            ingest=ingest,
            rules=rules,
            event_types=event_types,
            kafka_admin=KafkaAdmin(settings.librdkafka_config()),
            keys=KeyRing(
                settings.api_keys, ApiKeyStore(engine), settings.api_keys_refresh_interval.total_seconds()
            ),
            audit=AuditTrail(engine),
            rate_limiter=RateLimiter(settings.rate_limit_events_per_second, settings.rate_limit_burst),
            tracing=tracing,
        )

    async def start(self) -> None:
        """Check the database schema, start the producer and the relay."""
        await asyncio.to_thread(check_schema, self.engine)
        await self.rules.start(initial_rules(self.settings))
        seed = load_event_type_files(self.settings.event_type_file_paths)
        await self.event_types.start()
        if self.event_types.version == 0 and seed.event_types:
            await self._seed_event_types(seed)
        await self.keys.start()
        self._warn_about_auth()
        await self.spool.refresh()
        await asyncio.to_thread(self.relay.pause.refresh)
        await self.relay.release_dead_claims()
        await self.producer.start()
        self.relay.start()
        self.recovery.start()
        self.metrics.bind_live_values({self.metrics.ready: lambda: float(self.readiness.ready)})
        task = asyncio.create_task(self._prepare_topics(), name="prepare-topics")
        self.background.add(task)
        task.add_done_callback(self.background.discard)
        # Keep the readiness answer (and the `event_ingest_ready` gauge) fresh without probes.
        readiness_interval = max(self.settings.readiness_cache.total_seconds(), 1.0)
        self.loops.append(BackgroundLoop("readiness", self.check_ready, readiness_interval, logger=logger))
        self.loops.append(
            BackgroundLoop(
                "idempotency-purge",
                self._purge_idempotency_keys,
                IDEMPOTENCY_PURGE_SECONDS,
                delay_first=True,
                logger=logger,
            )
        )
        shared = multiprocess_directory()
        if shared is not None:
            self.worker_reports = WorkerReports(shared)
            report = functools.partial(self._report_to_other_workers, self.worker_reports)
            self.loops.append(BackgroundLoop("worker-report", report, REPORT_INTERVAL_SECONDS, logger=logger))
        for loop in self.loops:
            loop.start()

    def _warn_about_auth(self) -> None:
        if not self.settings.auth_enabled:
            logger.warning(
                "AUTHENTICATION IS OFF (AUTH_ENABLED=false): anyone who reaches this port may post "
                "events and administer the service; use this for local development only"
            )
        elif not self.keys.configured and not self.keys.records:
            logger.warning(
                "authentication is on but no API key exists: every request to /v1 and /admin is "
                "refused (401); define one in API_KEYS"
            )

    def needed_topics(self) -> list[str]:
        """Our configured topics, the DLQ, and every topic a routing rule names."""
        named = [topic for rule in self.router.rules for topic in rule.topics]
        return list(dict.fromkeys([*self.settings.configured_topics, self.settings.kafka_topic_dlq, *named]))

    def retention_ms(self, topic: str) -> int:
        """The retention a topic of ours gets: the DLQ's own, or every other topic's."""
        settings = self.settings
        retention = (
            settings.kafka_dlq_retention
            if topic == settings.kafka_topic_dlq
            else settings.kafka_topic_retention
        )
        return int(retention.total_seconds() * 1000)

    def describe_topic(self, topic: str) -> TopicReport:
        """Blocking: ask the cluster (call through asyncio.to_thread)."""
        return self.describe_topics([topic])[0]

    def describe_topics(self, topics: list[str]) -> list[TopicReport]:
        """Blocking: ask the cluster about all `topics` at once (call through asyncio.to_thread)."""
        settings = self.settings
        return self.kafka_admin.describe_many(
            {topic: self.retention_ms(topic) for topic in topics},
            settings.kafka_topic_partitions,
            settings.kafka_topic_replication_factor,
        )

    def create_topics(self, topics: list[str]) -> list[str]:
        """Blocking: create those of `topics` the cluster lacks, with our partitions, replication and
        retention (each topic's own). Returns the names created."""
        settings = self.settings
        created: list[str] = []
        for topic in dict.fromkeys(topics):
            created += self.kafka_admin.ensure_topics(
                [topic],
                settings.kafka_topic_partitions,
                settings.kafka_topic_replication_factor,
                {"retention.ms": str(self.retention_ms(topic))},
            )
        return created

    async def provide_topics(self, topics: list[str]) -> None:
        """Before a routing rule naming `topics` is saved: create the missing ones, or, with
        KAFKA_CREATE_TOPICS=false, refuse the rule (MissingTopicsError). TopicsUnavailableError when
        the cluster does not answer."""
        if not topics:
            return
        try:
            if self.settings.kafka_create_topics:
                await asyncio.to_thread(self.create_topics, topics)
                return
            missing = await asyncio.to_thread(self.kafka_admin.missing, topics)
        except Exception as exc:  # KafkaException, or a timeout: the cluster is not answering
            raise TopicsUnavailableError(str(exc)) from exc
        if missing:
            raise MissingTopicsError(missing)

    async def _prepare_topics(self) -> None:
        """Create missing topics and report mismatches; retried until the cluster answers."""
        while True:
            try:
                if self.settings.kafka_create_topics:
                    await asyncio.to_thread(self.create_topics, self.needed_topics())
                for topic in self.needed_topics():
                    report = await asyncio.to_thread(self.describe_topic, topic)
                    self.topic_reports[topic] = report
                    if report.mismatches:
                        logger.warning(
                            "topic differs from configuration",
                            extra={"topic": topic, "mismatches": report.mismatches},
                        )
                return
            except Exception as exc:  # the cluster may be down at start; the service runs anyway
                logger.warning("topics not checked yet; retrying", extra={"reason": str(exc)})
                await asyncio.sleep(TOPIC_CHECK_RETRY_SECONDS)

    async def _seed_event_types(self, seed: EventTypeFile) -> None:
        """First start: register the files' types and add their rules (workers starting together
        on an empty database may each try; the first registration of a name wins)."""
        for rule in seed.routing_rules:
            self.rules.policy.check(rule)  # a forbidden topic stops the start, as a rule file's does
        registered = await self.event_types.register_new(list(seed.event_types), SYSTEM)
        existing = {rule.id for rule in self.router.rules}
        for rule in seed.routing_rules:
            if rule.id not in existing:
                await self.rules.save(rule, SYSTEM)
        if registered:
            logger.info("event types seeded", extra={"event_types": registered})

    async def set_paused(self, paused: bool, actor: Actor) -> None:
        """Pause or resume publishing here at once, and everywhere at the next relay round."""
        await asyncio.to_thread(self.relay.pause.set, paused, actor)
        self.spool.added.set()  # resumed: the relay drains now, not at its next tick

    async def drain(self) -> None:
        """After SIGTERM: refuse new events (503, not ready), let in-flight records finish within
        SHUTDOWN_FLUSH_TIMEOUT, and spool whatever Kafka has not acknowledged by then."""
        self.shutting_down = True
        await asyncio.sleep(self.settings.shutdown_drain_delay.total_seconds())
        self.publisher.draining = True
        left = await self.producer.flush(self.settings.shutdown_flush_timeout.total_seconds())
        if left:
            self.producer.purge()
        await self.publisher.idle.wait()  # their requests are spooling the purged records

    async def stop(self) -> int:
        """Stop the relay, flush the producer (bounded); returns records left unflushed."""
        self.shutting_down = True
        for task in list(self.background):
            task.cancel()
        for loop in self.loops:
            await loop.stop()
        if self.worker_reports is not None:
            self.worker_reports.remove()  # stopped: this worker is no longer part of the service
        await self.rules.stop()
        await self.event_types.stop()
        await self.keys.stop()
        await self.recovery.stop()
        await self.relay.stop()
        left = await self.producer.close(self.settings.shutdown_flush_timeout.total_seconds())
        self.engine.dispose()
        await self.ingest.idempotency.close()
        await asyncio.to_thread(self.tracing.shutdown)
        return left

    def worker_report(self) -> dict[str, Any]:
        """This worker's state: what the whole-service metrics and health take from each worker."""
        metrics = self.metrics
        return {
            "pid": os.getpid(),
            "reported_at": time.time(),
            "circuit_breaker": {
                "state": self.breaker.state,
                "transitions": [{"at": at, "state": state} for at, state in self.breaker.transitions],
            },
            "queue_length": self.producer.queue_length(),
            "in_flight": self.publisher.in_flight,
            "events_published": metrics.events_published,
            "average_latency_ms": None
            if metrics.average_latency_ms is None
            else round(metrics.average_latency_ms, 3),
            "last_publish_epoch": metrics.last_publish_epoch,
            "recent": metrics.recent.totals(),
        }

    async def _report_to_other_workers(self, reports: WorkerReports) -> None:
        """Share this worker's state (a failed write leaves the view stale; serving goes on)."""
        await asyncio.to_thread(reports.write, self.worker_report())

    async def _purge_idempotency_keys(self) -> None:
        """Remove expired keys, also while idle (every worker does; with a shared store, a delete
        finds nothing twice)."""
        purged = await self.ingest.idempotency.purge_expired()
        if purged:
            logger.info("expired idempotency keys purged", extra={"keys": purged})

    async def check_ready(self) -> Readiness:
        """Ready when not shutting down and the cluster answered a metadata request recently."""
        if self.shutting_down:
            self.readiness = Readiness(False, "shutting down", time.monotonic())
            return self.readiness
        if time.monotonic() - self.readiness.checked_at < self.settings.readiness_cache.total_seconds():
            return self.readiness
        reachable = await asyncio.to_thread(self.producer.cluster_reachable, 2.0)
        reason = "kafka reachable" if reachable else "kafka cluster not reachable"
        self.readiness = Readiness(reachable, reason, time.monotonic())
        return self.readiness
