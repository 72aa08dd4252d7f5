"""The service's settings, with the variable names operators of the Go publisher already know."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from app.config.durations import Duration, format_duration
from app.security.keys import ConfiguredApiKey

CompressionType = Literal["none", "gzip", "snappy", "lz4", "zstd"]
SerializationFormat = Literal["json", "protobuf"]
SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


def librdkafka_names(properties: dict[str, str]) -> dict[str, str]:
    """Pass-through librdkafka properties from the environment, by their librdkafka names.
    Environment variable names cannot hold dots in most shells, so `SASL_MECHANISM` stands for
    `sasl.mechanism`; librdkafka property names never contain underscores."""
    return {key.lower().replace("_", "."): item for key, item in properties.items()}


class SettingsError(Exception):
    """A setting has a value the service cannot run with; the message names the variable."""


class Settings(BaseSettings):
    """Every knob of the service. Environment variables are the field names in upper case."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_ignore_empty=True,
        env_nested_delimiter="__",
        extra="ignore",
        validate_default=True,
    )

    # --- HTTP server
    host: str = Field("127.0.0.1", description="address uvicorn binds to")
    port: Annotated[int, Field(ge=1, le=65535, description="an integer port 1-65535")] = 8083
    workers: Annotated[int, Field(ge=1, le=64, description="number of uvicorn worker processes")] = 1
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["json", "text"] = "json"

    # --- Kafka connection; empty means "start a local development broker" (make run only)
    kafka_brokers: str = Field("", description="comma-separated host:port list")
    dev_broker_port: Annotated[int, Field(ge=1, le=65535)] = 9092

    # --- Topics
    kafka_topic_attempts: str = "user.attempts"
    kafka_topic_sessions: str = "user.sessions"
    kafka_topic_placements: str = "user.placements"
    kafka_topic_activities: str = "user.activities"
    kafka_topic_ml_training: str = "ml.training_events"
    kafka_topic_dlq: str = "dlq.events"
    # Topics the service needs are created at start when missing (never changed when present).
    kafka_create_topics: bool = True
    kafka_topic_partitions: Annotated[int, Field(ge=1, le=10_000)] = 4
    kafka_topic_replication_factor: Annotated[int, Field(ge=1, le=100)] = 1
    kafka_topic_retention: Duration = timedelta(days=7)
    # Dead letters wait for a person to look at them: they are kept longer than events.
    kafka_dlq_retention: Duration = timedelta(days=30)

    # --- Producer
    kafka_producer_timeout: Duration = timedelta(seconds=10)
    kafka_producer_retries: Annotated[int, Field(ge=0, le=100)] = 3
    kafka_producer_batch_size: Annotated[int, Field(ge=1, le=1_000_000)] = 100
    # linger.ms, the Go publisher's 10 ms: under load concurrent requests share batches (fewer produce
    # requests, less CPU in the broker); a send at a quiet moment does not wait it out (below).
    kafka_producer_batch_timeout: Duration = timedelta(milliseconds=10)
    # A send that finds the producer holding at most this many records (queued or awaiting their
    # acknowledgement) goes out at once; 0: every send waits out linger.ms.
    kafka_producer_eager_below: Annotated[int, Field(ge=0, le=1_000_000)] = 8
    kafka_compression_type: CompressionType = "snappy"
    kafka_serialization: SerializationFormat = "json"
    kafka_queue_max_messages: Annotated[int, Field(ge=1, le=10_000_000)] = 100_000
    kafka_queue_max_kbytes: Annotated[int, Field(ge=1, le=2_097_151)] = 65_536
    # The broker's record size limit: a larger record is refused before it is sent and dead-lettered.
    kafka_message_max_bytes: Annotated[int, Field(ge=1000, le=1_000_000_000)] = 1_000_000
    # The client's own limit, above the broker's so an oversized record still fits the DLQ topic.
    kafka_dlq_message_max_bytes: Annotated[int, Field(ge=1000, le=1_000_000_000)] = 10_000_000
    # Service-level retry policy for outages, above librdkafka's own retries.
    kafka_retry_initial_delay: Duration = timedelta(milliseconds=100)
    kafka_retry_max_delay: Duration = timedelta(seconds=5)
    kafka_retry_factor: Annotated[float, Field(ge=1, le=10)] = 2.0
    kafka_retry_jitter: Annotated[float, Field(ge=0, le=1)] = 0.2
    # After a record timed out: how often to ask the cluster whether it answers again (then a
    # fresh producer, a breaker trial and the spool due at once: app/publishing/recovery.py).
    kafka_recovery_probe_interval: Duration = timedelta(milliseconds=500)
    # While a broker connection has failed lately (a broker killed, a leader lost), a request stops
    # waiting for acknowledgements after this long and spools what is unacknowledged, so that a
    # leader election does not hold producers for the cluster's whole failure detection time
    # (Kafka's broker.session.timeout.ms, 9 s by default). 0 switches it off.
    kafka_fault_ack_deadline: Duration = timedelta(seconds=1)
    max_in_flight_records: Annotated[int, Field(ge=1, le=10_000_000)] = 50_000
    # Ingest requests one worker serves at once (0: no limit). Far above what a worker needs at
    # full speed (tens).
    max_concurrent_requests: Annotated[int, Field(ge=0, le=1_000_000)] = 256
    # Past that, up to MAX_QUEUED_REQUESTS wait (bodies unread) for up to REQUEST_QUEUE_TIMEOUT,
    # first come first served, before 503 `overloaded` (0 or 0s: refuse at once).
    max_queued_requests: Annotated[int, Field(ge=0, le=1_000_000)] = 512
    request_queue_timeout: Duration = timedelta(seconds=1)
    # Extra librdkafka properties: KAFKA_PRODUCER_CONFIG__SOCKET_KEEPALIVE_ENABLE=true becomes
    # socket.keepalive.enable=true. Their values are never shown (they may hold secrets).
    kafka_producer_config: dict[str, str] = Field(default_factory=dict)

    # --- Kafka security (producer, admin client and DLQ replay consumer alike)
    kafka_security_protocol: SecurityProtocol = "PLAINTEXT"
    kafka_sasl_mechanism: SaslMechanism = "PLAIN"
    kafka_sasl_username: str = ""
    kafka_sasl_password: SecretStr = SecretStr("")
    kafka_ssl_ca_location: Path | None = Field(None, description="PEM file of the CA that signed the brokers")
    kafka_ssl_certificate_location: Path | None = Field(None, description="client certificate (mutual TLS)")
    kafka_ssl_key_location: Path | None = Field(None, description="client private key (mutual TLS)")
    kafka_ssl_key_password: SecretStr = SecretStr("")
    kafka_ssl_endpoint_identification: Literal["https", "none"] = "https"

    # --- Durability: the spool (SQLite by default, PostgreSQL in production) and its relay
    data_dir: Path = Path("data")
    database_url: str = Field("", description="SQLAlchemy URL; empty means sqlite:///DATA_DIR/ingest.db")
    ack_level: Literal["kafka", "spool"] = "kafka"
    spool_max_records: Annotated[int, Field(ge=1, le=1_000_000_000)] = 1_000_000
    spool_max_age: Duration = timedelta(hours=24)
    spool_max_attempts: Annotated[int, Field(ge=1, le=1_000_000)] = 1000
    spool_relay_interval: Duration = timedelta(seconds=1)
    spool_relay_batch: Annotated[int, Field(ge=1, le=100_000)] = 500
    spool_claim_lease: Duration = timedelta(seconds=60)

    # --- Routing rules and topic governance
    routing_rules_file: Path | None = Field(
        None,
        description="YAML file of routing rules that seeds an empty rule table; unset: the built-in defaults",
    )
    routing_rules_poll_interval: Duration = timedelta(seconds=2)
    environment: Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,32}$")] = "dev"
    kafka_allowed_topics: str = Field("", description="comma-separated topics rules may name, beyond ours")
    kafka_topic_pattern: str = Field(
        "", description="regex (with ${env} and ${eventType}) a topic not on the allow-list must match"
    )

    # --- Custom event types (/admin/event-types), picked up at the routing rules' poll interval
    event_types_max: Annotated[int, Field(ge=0, le=100_000)] = 1000
    event_types_files: str = Field(
        "",
        description="comma-separated event-type files (event_types/*.json) that seed an empty registry",
    )

    @property
    def event_type_file_paths(self) -> list[str]:
        return [name.strip() for name in self.event_types_files.split(",") if name.strip()]

    # --- Dead-letter replay (POST /admin/dlq/replay)
    dlq_replay_group: str = "event-ingest-dlq-replay"
    dlq_replay_window: Annotated[int, Field(ge=1, le=100_000)] = 100
    dlq_replay_timeout: Duration = timedelta(seconds=60)

    # --- Idempotency (client_attempt_id, Idempotency-Key)
    idempotency_window: Duration = timedelta(hours=24)
    # auto: memory with one worker, host with several; memory with several workers is refused (each
    # worker would remember only its own keys, so a repeat reaching another worker is published again).
    idempotency_store: Literal["auto", "memory", "host", "database"] = "auto"
    idempotency_max_keys: Annotated[int, Field(ge=1, le=100_000_000)] = 1_000_000

    # --- Ingest API
    max_batch_events: Annotated[int, Field(ge=1, le=100_000)] = 500
    max_request_bytes: Annotated[int, Field(ge=1024, le=1_073_741_824)] = 5 * 1024 * 1024
    # Event times outside [now - EVENT_MAX_AGE, now + EVENT_MAX_FUTURE_SKEW] are refused (422);
    # 0 switches a bound off.
    event_max_age: Duration = timedelta(days=30)
    event_max_future_skew: Duration = timedelta(minutes=5)
    # Fields an event model does not know: `reject` (422 naming the field) or `ignore` (dropped).
    unknown_fields: Literal["reject", "ignore"] = "reject"

    # --- Security: API keys, scopes, rate limits
    auth_enabled: bool = Field(True, description="false only for local development: anyone may do anything")
    api_keys: list[ConfiguredApiKey] = Field(
        default_factory=list,
        description='JSON list: [{"name", "sha256" or "key", "scopes": [...], "event_types": [...]}]',
    )
    api_keys_refresh_interval: Duration = timedelta(seconds=2)
    metrics_public: bool = Field(False, description="true: /metrics routes need no key (private network)")
    rate_limit_events_per_second: Annotated[float, Field(ge=0, le=10_000_000)] = 0.0
    rate_limit_burst: Annotated[int, Field(ge=1, le=10_000_000)] = 1000

    # --- Operator console (/console): pages over the admin API, logged in with an API key
    console_enabled: bool = True
    # Seals the console's login cookie. Empty: a random one at each start (`event-ingest serve` shares
    # it among its workers); set one shared value when several instances sit behind one address.
    console_session_secret: SecretStr = SecretStr("")
    console_session_ttl: Duration = timedelta(hours=8)

    # --- Tracing (OpenTelemetry; off unless an OTLP endpoint is set; needs the `otel` extra)
    otel_exporter_otlp_endpoint: str = Field(
        "", description="OTLP/HTTP base URL, e.g. http://otel-collector:4318"
    )
    otel_service_name: str = "event-ingest"
    otel_traces_sampler_arg: Annotated[float, Field(ge=0, le=1)] = 1.0

    # --- Circuit breaker and health
    circuit_breaker_failure_threshold: Annotated[int, Field(ge=1, le=10_000)] = 5
    circuit_breaker_reset_timeout: Duration = timedelta(seconds=30)
    health_error_rate_threshold: Annotated[float, Field(ge=0, le=1)] = 0.05
    health_dlq_rate_threshold: Annotated[float, Field(ge=0, le=1)] = 0.01
    health_activity_window: Duration = timedelta(minutes=5)
    readiness_cache: Duration = timedelta(seconds=2)
    shutdown_flush_timeout: Duration = timedelta(seconds=10)
    # After SIGTERM: how long to keep answering (503, readiness false) so load balancers notice.
    shutdown_drain_delay: Duration = timedelta(0)

    @field_validator("kafka_producer_config", mode="after")
    @classmethod
    def _librdkafka_names(cls, value: dict[str, str]) -> dict[str, str]:
        return librdkafka_names(value)

    @field_validator(
        "kafka_topic_attempts",
        "kafka_topic_sessions",
        "kafka_topic_placements",
        "kafka_topic_activities",
        "kafka_topic_ml_training",
        "kafka_topic_dlq",
    )
    @classmethod
    def _legal_topic(cls, value: str) -> str:
        from app.routing.topics import check_topic_name

        return check_topic_name(value)

    @property
    def allowed_topics(self) -> set[str]:
        """Topics rules may always name: ours, and KAFKA_ALLOWED_TOPICS."""
        listed = {item.strip() for item in self.kafka_allowed_topics.split(",") if item.strip()}
        return listed | set(self.configured_topics) | {self.kafka_topic_dlq}

    @model_validator(mode="after")
    def _one_idempotency_store_for_all_workers(self) -> Settings:
        if self.idempotency_store == "memory" and self.workers > 1:
            raise ValueError(
                f"IDEMPOTENCY_STORE=memory keeps keys per process, so with WORKERS={self.workers} a repeat "
                "reaching another worker is published again: use host (shared by this host's workers), "
                "database (shared by every instance) or auto"
            )
        return self

    @property
    def idempotency_store_kind(self) -> Literal["memory", "host", "database"]:
        """The store in use: IDEMPOTENCY_STORE with `auto` resolved by the number of workers."""
        if self.idempotency_store == "auto":
            return "memory" if self.workers == 1 else "host"
        return self.idempotency_store

    @property
    def sqlalchemy_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir.resolve() / 'ingest.db'}"

    @property
    def broker_list(self) -> list[str]:
        return [item.strip() for item in self.kafka_brokers.split(",") if item.strip()]

    @property
    def configured_topics(self) -> list[str]:
        return [
            self.kafka_topic_attempts,
            self.kafka_topic_sessions,
            self.kafka_topic_placements,
            self.kafka_topic_activities,
            self.kafka_topic_ml_training,
        ]

    def librdkafka_config(self) -> dict[str, str | int | float | bool]:
        """The producer configuration: our defaults, then the operator's pass-through properties."""
        timeout_ms = int(self.kafka_producer_timeout.total_seconds() * 1000)
        config: dict[str, str | int | float | bool] = {
            "bootstrap.servers": self.kafka_brokers,
            "client.id": "event-ingest",
            "acks": "all",
            "enable.idempotence": True,
            "compression.type": self.kafka_compression_type,
            "batch.num.messages": self.kafka_producer_batch_size,
            "linger.ms": self.kafka_producer_batch_timeout.total_seconds() * 1000,
            "message.timeout.ms": timeout_ms,
            "request.timeout.ms": min(timeout_ms, 30_000),
            "queue.buffering.max.messages": self.kafka_queue_max_messages,
            "queue.buffering.max.kbytes": self.kafka_queue_max_kbytes,
            "message.max.bytes": max(self.kafka_dlq_message_max_bytes, self.kafka_message_max_bytes),
            # The Go publisher hashed keys; murmur2_random matches the Java client's partitioner,
            # so a consumer written for Java producers finds each user on the same partition.
            "partitioner": "murmur2_random",
        }
        config.update(self.kafka_security_config())
        config.update(self.kafka_producer_config)
        return config

    def kafka_security_config(self) -> dict[str, str]:
        """librdkafka's security properties from the KAFKA_SECURITY_*/SASL_*/SSL_* settings."""
        protocol = self.kafka_security_protocol
        config = {"security.protocol": protocol.lower()}
        if protocol.startswith("SASL"):
            config["sasl.mechanism"] = self.kafka_sasl_mechanism
            config["sasl.username"] = self.kafka_sasl_username
            config["sasl.password"] = self.kafka_sasl_password.get_secret_value()
        if protocol.endswith("SSL"):
            config["ssl.endpoint.identification.algorithm"] = self.kafka_ssl_endpoint_identification
            files = {
                "ssl.ca.location": self.kafka_ssl_ca_location,
                "ssl.certificate.location": self.kafka_ssl_certificate_location,
                "ssl.key.location": self.kafka_ssl_key_location,
            }
            config.update({name: str(path) for name, path in files.items() if path is not None})
            if self.kafka_ssl_key_password.get_secret_value():
                config["ssl.key.password"] = self.kafka_ssl_key_password.get_secret_value()
        return config

    def public_view(self) -> dict[str, object]:
        """Settings safe to show to operators: no pass-through values (they may hold secrets)."""
        shown = self.model_dump(exclude={"kafka_producer_config", "database_url", "api_keys"})
        shown["database_url"] = _without_password(self.sqlalchemy_url)
        shown["kafka_producer_config"] = sorted(self.kafka_producer_config)
        shown["api_keys"] = [item.name for item in self.api_keys]
        for key, value in shown.items():
            if isinstance(value, SecretStr):
                shown[key] = "***" if value.get_secret_value() else ""
        for key, value in shown.items():
            if isinstance(value, timedelta):
                shown[key] = format_duration(value)
        return shown


def _without_password(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def _describe(error: dict[str, object]) -> str:
    location = error.get("loc")
    message = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
    if not location:  # a rule across settings: its message names them
        return f"invalid settings: {message}"
    assert isinstance(location, tuple)
    name = "__".join(str(part) for part in location).upper()
    value = "***" if _SECRET_SETTING.search(name) else repr(error.get("input"))
    return f"invalid setting {name}={value}: {message}"


# Settings whose values may hold secrets: an error about them never repeats the value.
_SECRET_SETTING = re.compile(r"PASSWORD|^API_KEYS|^KAFKA_PRODUCER_CONFIG|^DATABASE_URL")


def load_settings(**overrides: object) -> Settings:
    """Read settings; on a bad value raise SettingsError with one line per bad variable."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        lines = [_describe(dict(error)) for error in exc.errors(include_url=False)]
        raise SettingsError("\n".join(lines)) from None
