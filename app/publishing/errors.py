"""How the publisher classifies Kafka failures: an outage (retry later) or a bad record (never retry)."""

from __future__ import annotations

from confluent_kafka import KafkaError

# librdkafka marks these non-retriable, but they mean "the cluster could not be reached in time":
# an outage, not a fault of the record. (docs/brokers.md: _MSG_TIMED_OUT after a paused broker.)
_OUTAGE_CODES = frozenset(
    {
        KafkaError._MSG_TIMED_OUT,
        KafkaError._TIMED_OUT,
        KafkaError._TRANSPORT,
        KafkaError._ALL_BROKERS_DOWN,
        KafkaError._RESOLVE,
        KafkaError._DESTROY,
        KafkaError._FENCED,
        KafkaError._FATAL,
        KafkaError.UNKNOWN_PRODUCER_ID,
        KafkaError.INVALID_PRODUCER_EPOCH,
        KafkaError._PURGE_QUEUE,
        KafkaError._PURGE_INFLIGHT,
        KafkaError.BROKER_NOT_AVAILABLE,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.REQUEST_TIMED_OUT,
        KafkaError.NETWORK_EXCEPTION,
        KafkaError.NOT_ENOUGH_REPLICAS,
        KafkaError.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
        KafkaError.PRODUCER_FENCED,
        KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER,
    }
)


# Delivery errors after which this producer instance will never deliver again (docs/brokers.md:
# after a stalled broker, every delivery of an idempotent producer fails with PRODUCER_FENCED).
PRODUCER_DEAD_CODES = frozenset(
    {
        KafkaError._FATAL,
        KafkaError._FENCED,
        KafkaError.PRODUCER_FENCED,
        KafkaError.UNKNOWN_PRODUCER_ID,
        KafkaError.INVALID_PRODUCER_EPOCH,
        KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER,
    }
)
# The record's producer is gone, not the cluster: purged when we replaced the producer (outage
# recovery), or refused because the broker fenced that producer (a new one is made at once).
_PRODUCER_LOST_CODES = PRODUCER_DEAD_CODES | {KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT}


# Our own code for a record still unacknowledged at KAFKA_FAULT_ACK_DEADLINE while a broker
# connection had failed: spooled, though the producer may still deliver it (a duplicate, then).
ACK_DEADLINE_PASSED = -2


class DeliveryError(Exception):
    """A record Kafka did not acknowledge, with enough context to log and answer the client.

    `retriable` is True for an outage (the same record may succeed later) and False for a
    record that can never succeed (too large, invalid topic, not authorized).
    """

    def __init__(self, topic: str, code: int, name: str, reason: str, retriable: bool) -> None:
        super().__init__(topic, code, name, reason, retriable)
        self.topic = topic
        self.code = code
        self.name = name
        self.reason = reason
        self.retriable = retriable

    def __str__(self) -> str:
        return f"{self.name} on topic {self.topic}: {self.reason}"

    @property
    def producer_lost(self) -> bool:
        """Failed with its producer (replaced by us, or fenced by the broker), not because the
        cluster is down: no evidence of an outage for the breaker, and worth sending again soon."""
        return self.code in _PRODUCER_LOST_CODES

    @property
    def deadline_passed(self) -> bool:
        """Still in the producer when the request stopped waiting for it during a broker failure."""
        return self.code == ACK_DEADLINE_PASSED

    @classmethod
    def from_kafka(cls, topic: str, error: KafkaError) -> DeliveryError:
        code = error.code()
        retriable = bool(error.retriable()) or code in _OUTAGE_CODES
        return cls(topic=topic, code=code, name=error.name(), reason=error.str(), retriable=retriable)


class QueueFullError(Exception):
    """The producer's bounded in-memory queue is full: backpressure, answered 429."""


class BrokerUnavailableError(Exception):
    """The circuit breaker is open or Kafka failed to acknowledge in time: answered 503."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after
