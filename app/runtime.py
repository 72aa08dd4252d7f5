"""The objects one app instance wires together, built once from Settings and handed to routes."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry

from app.config.settings import Settings
from app.observability.publisher_metrics import PublisherMetrics
from app.publishing.breaker import STATE_VALUES, DeliveryBreaker
from app.publishing.producer import AsyncProducer
from app.publishing.publisher import EventPublisher
from app.routing.router import Router
from app.routing.rules import default_rules
from app.serialization.codecs import serializer_for


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
    publisher: EventPublisher
    readiness: Readiness = field(default_factory=Readiness)
    shutting_down: bool = False

    @classmethod
    def build(cls, settings: Settings) -> Runtime:
        registry = CollectorRegistry()
        metrics = PublisherMetrics(registry, settings.health_activity_window.total_seconds())
        breaker = DeliveryBreaker(
            settings.circuit_breaker_failure_threshold,
            settings.circuit_breaker_reset_timeout,
            on_change=lambda state: metrics.breaker_state.set(STATE_VALUES.get(state, 2)),
        )
        producer = AsyncProducer(
            settings.librdkafka_config(), on_replaced=lambda reason: metrics.record_producer_restart()
        )
        metrics.queue_length.set_function(producer.queue_length)
        router = Router(default_rules(settings))
        publisher = EventPublisher(
            producer=producer,
            router=router,
            serializer=serializer_for(settings.kafka_serialization),
            metrics=metrics,
            breaker=breaker,
            ack_timeout=settings.kafka_producer_timeout.total_seconds(),
        )
        return cls(settings, registry, metrics, router, breaker, producer, publisher)

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
