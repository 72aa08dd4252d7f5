"""`event-ingest analytics` (or `event-ingest-analytics`): check the settings, create the topics the
service's way, then run the topology until SIGTERM/SIGINT (Quix commits on the way out)."""

from __future__ import annotations

import logging
import sys
import threading
import time
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient
from quixstreams import Application
from quixstreams.checkpointing.exceptions import CheckpointConsumerCommitError, CheckpointProducerTimeout

from app.config.settings import Settings, SettingsError, load_settings
from app.observability.logging import configure_logging
from app.publishing.topic_admin import KafkaAdmin
from app.routing.governance import TopicPolicy
from learning_analytics.metrics import AnalyticsMetrics, HealthServer
from learning_analytics.pipeline import Topics, Topology
from learning_analytics.settings import AnalyticsSettings, load_analytics_settings

logger = logging.getLogger("learning_analytics")
DEV_BROKER_CLUSTER_ID = "tansu_cluster"  # the development broker's answer to DescribeCluster


def topics_of(settings: Settings, analytics: AnalyticsSettings) -> Topics:
    return Topics(
        attempts=settings.kafka_topic_attempts,
        sessions=settings.kafka_topic_sessions,
        learner=analytics.learner_topic,
        item=analytics.item_topic,
        session_days=analytics.session_topic,
        dlq=analytics.dlq_topic,
        late_suffix=analytics.late_suffix,
    )


def output_topics(topics: Topics, analytics: AnalyticsSettings) -> dict[str, str]:
    """The topics the component writes, with the aggregate each belongs to."""
    wanted = analytics.aggregate_set
    out = {topics.dlq: "dlq"}
    if "learner" in wanted:
        out |= {topics.learner: "learner", topics.late(topics.attempts): "learner"}
    if "item" in wanted:
        out |= {topics.item: "item", topics.late(topics.attempts): "item"}
    if "sessions" in wanted:
        out |= {topics.session_days: "sessions", topics.late(topics.sessions): "sessions"}
    return out


def check_governance(settings: Settings, outputs: dict[str, str]) -> None:
    """The service's topic policy, with the aggregate standing for ${eventType}: with a naming
    convention (KAFKA_TOPIC_PATTERN) each output must follow it or be on KAFKA_ALLOWED_TOPICS.
    Without one, they are configured topics, as the service's own KAFKA_TOPIC_* are."""
    if not settings.kafka_topic_pattern:
        return
    policy = TopicPolicy(settings.allowed_topics, settings.kafka_topic_pattern, settings.environment)
    refused = [
        topic
        for topic, aggregate in outputs.items()
        if topic not in policy.allowed and not policy.follows_convention(topic, aggregate)
    ]
    if refused:
        raise SettingsError(
            f"topic(s) {', '.join(refused)} are not on KAFKA_ALLOWED_TOPICS nor follow "
            f"KAFKA_TOPIC_PATTERN {settings.kafka_topic_pattern!r}"
        )


def bootstrap(settings: Settings) -> str:
    # Unset: the development broker `event-ingest serve` starts on DEV_BROKER_PORT (make run).
    return settings.kafka_brokers or f"127.0.0.1:{settings.dev_broker_port}"


def connection(settings: Settings) -> dict[str, Any]:
    return {"bootstrap.servers": bootstrap(settings), **settings.kafka_security_config()}


def wait_for_cluster(config: dict[str, Any], seconds: float = 60.0) -> str:
    """The cluster's id, once it answers (the service may still be starting its broker)."""
    admin = AdminClient(config)
    deadline = time.monotonic() + seconds
    while True:
        try:
            return str(admin.describe_cluster(request_timeout=5).result(timeout=10).cluster_id)
        except KafkaException as exc:
            if time.monotonic() > deadline:
                raise SettingsError(
                    f"no Kafka cluster answers at {config['bootstrap.servers']}: {exc}"
                ) from None
            time.sleep(1)


def guarantee_for(analytics: AnalyticsSettings, cluster_id: str) -> str:
    if analytics.processing_guarantee != "auto":
        return analytics.processing_guarantee
    # The development broker never aborts a dead transaction: after a crash read_committed readers
    # and the group's offsets would stay stuck, so exactly-once is for Apache Kafka only.
    return "at-least-once" if cluster_id == DEV_BROKER_CLUSTER_ID else "exactly-once"


def build(
    settings: Settings, analytics: AnalyticsSettings, metrics: AnalyticsMetrics, status: dict[str, Any]
) -> Application:
    config = connection(settings)
    cluster_id = wait_for_cluster(config)
    topics = topics_of(settings, analytics)
    outputs = output_topics(topics, analytics)
    check_governance(settings, outputs)
    admin = KafkaAdmin(config)
    retention = str(int(settings.kafka_topic_retention.total_seconds() * 1000))
    if settings.kafka_create_topics:
        # The inputs too: Quix derives its changelog and repartition topics from them, and reads
        # their retention.ms (which the development broker reports only when set explicitly).
        admin.ensure_topics(
            [topics.attempts, topics.sessions, *outputs],
            settings.kafka_topic_partitions,
            settings.kafka_topic_replication_factor,
            {"retention.ms": retention},
        )
    guarantee = guarantee_for(analytics, cluster_id)
    producer_extra: dict[str, Any] = {**settings.kafka_security_config()}
    consumer_extra: dict[str, Any] = {}
    if guarantee == "exactly-once":
        producer_extra["transaction.timeout.ms"] = analytics.transaction_timeout_ms
    if cluster_id == DEV_BROKER_CLUSTER_ID:
        # The development broker answers ListOffsets with the last batch's base offset + 1: a
        # changelog written in batches then fails restoring (InvalidStoreChangelogOffset).
        producer_extra["batch.num.messages"] = 1
        # It lets a group join take about half the session timeout (23 s at the default 45 s).
        consumer_extra["session.timeout.ms"] = 6000
    status.update(guarantee=guarantee, cluster_id=cluster_id, consumer_group=analytics.consumer_group)

    consumed: dict[str, Any] = {}

    def processed(topic: str, _partition: int, _offset: int) -> None:
        counter = consumed.get(topic)
        if counter is None:
            counter = consumed[topic] = metrics.consumed.labels(topic)
        counter.inc()
        metrics.last_processed.set(time.time())

    def processing_error(exc: BaseException, row: Any, _logger: Any) -> bool:
        metrics.processing_errors.inc()
        return False  # stop: an unexpected error must not skip a record silently

    def consumer_error(exc: BaseException, message: Any, _logger: Any) -> bool:
        metrics.consumer_errors.inc()
        logger.warning("consumer error", extra={"error": str(exc)})
        return True

    def producer_error(exc: BaseException, row: Any, _logger: Any) -> bool:
        metrics.producer_errors.inc()
        return False

    app = Application(
        broker_address=bootstrap(settings),
        consumer_group=analytics.consumer_group,
        auto_offset_reset=analytics.auto_offset_reset,
        commit_interval=analytics.commit_interval.total_seconds(),
        consumer_extra_config={
            **settings.kafka_security_config(),
            **consumer_extra,
            **analytics.consumer_config,
            "stats_cb": metrics.on_stats,
            "statistics.interval.ms": int(analytics.lag_interval.total_seconds() * 1000),
        },
        producer_extra_config=producer_extra,
        state_dir=str(analytics.state_dir),
        processing_guarantee=guarantee,  # type: ignore[arg-type]
        on_message_processed=processed,
        on_processing_error=processing_error,
        on_consumer_error=consumer_error,
        on_producer_error=producer_error,
        loglevel=None,
    )
    Topology(app, analytics, topics, metrics, exactly_once=guarantee == "exactly-once").build()
    return app


def watch_commits(
    settings: Settings, analytics: AnalyticsSettings, metrics: AnalyticsMetrics, stop: threading.Event
) -> None:
    """The group's committed offsets, every ANALYTICS_LAG_INTERVAL, into the metrics."""
    admin = KafkaAdmin(connection(settings))
    while not stop.wait(analytics.lag_interval.total_seconds()):
        try:
            metrics.on_committed(admin.committed(analytics.consumer_group))
        except KafkaException as exc:
            logger.warning("could not read the group's committed offsets", extra={"error": str(exc)})


def run(settings: Settings, analytics: AnalyticsSettings) -> int:
    metrics = AnalyticsMetrics()
    status: dict[str, Any] = {"running": False, "failed": False}
    server = HealthServer(analytics.host, analytics.port, metrics, status)
    server.start()
    logger.info("analytics health and metrics", extra={"port": server.port})
    stop = threading.Event()
    watcher = threading.Thread(
        target=watch_commits, args=(settings, analytics, metrics, stop), name="analytics-commits", daemon=True
    )
    try:
        app = build(settings, analytics, metrics, status)
        status["running"] = True
        logger.info("analytics started", extra={k: v for k, v in status.items() if k != "running"})
        watcher.start()
        app.run()
        return 0
    except (CheckpointConsumerCommitError, CheckpointProducerTimeout) as exc:
        # Nothing past the last commit is lost: restarted, the component resumes from it.
        metrics.commit_errors.inc()
        status["failed"] = True
        logger.error("a checkpoint failed to commit: stopping", extra={"error": str(exc)})
        raise
    except Exception:
        status["failed"] = True
        raise
    finally:
        status["running"] = False
        stop.set()
        server.stop()
        logger.info("analytics stopped")


def main(argv: list[str] | None = None) -> None:
    try:
        settings, analytics = load_settings(), load_analytics_settings()
    except SettingsError as exc:
        sys.stderr.write(f"event-ingest analytics: {exc}\n")
        raise SystemExit(2) from None
    configure_logging(settings.log_level, settings.log_format)
    try:
        raise SystemExit(run(settings, analytics))
    except SettingsError as exc:
        sys.stderr.write(f"event-ingest analytics: {' '.join(str(exc).split())}\n")
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
