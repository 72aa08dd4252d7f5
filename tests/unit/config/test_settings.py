"""Settings: operator variable names, durations, pass-through librdkafka properties, clear errors."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

from app.config.durations import format_duration, parse_duration
from app.config.settings import SettingsError, load_settings

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10ms", timedelta(milliseconds=10)),
        ("10s", timedelta(seconds=10)),
        ("1m", timedelta(minutes=1)),
        ("1m30s", timedelta(seconds=90)),
        ("2.5s", timedelta(seconds=2.5)),
        ("1h", timedelta(hours=1)),
        ("0", timedelta(0)),
    ],
)
def test_durations_accept_go_notation(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["10", "ten seconds", "10 s", "s", "", "-1s", "1d"])
def test_durations_refuse_anything_else(text: str) -> None:
    with pytest.raises(ValueError, match="duration such as 10ms"):
        parse_duration(text)


def test_format_duration_round_trips() -> None:
    assert format_duration(timedelta(milliseconds=10)) == "10ms"
    assert format_duration(timedelta(seconds=10)) == "10s"


def test_defaults_match_the_go_publisher(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = load_settings(_env_file=None)

    assert settings.port == 8083
    assert settings.kafka_topic_attempts == "user.attempts"
    assert settings.kafka_topic_ml_training == "ml.training_events"
    assert settings.kafka_producer_timeout == timedelta(seconds=10)
    # The Go publisher's 10 ms, but a send at a quiet moment goes out at once (see the producer).
    assert settings.kafka_producer_batch_timeout == timedelta(milliseconds=10)
    assert settings.kafka_producer_eager_below == 8
    assert settings.kafka_producer_batch_size == 100
    assert settings.kafka_compression_type == "snappy"
    assert settings.kafka_serialization == "json"


def test_environment_variables_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BROKERS", "127.0.0.1:9999")
    monkeypatch.setenv("KAFKA_PRODUCER_TIMEOUT", "1m")
    monkeypatch.setenv("KAFKA_COMPRESSION_TYPE", "zstd")
    monkeypatch.setenv("KAFKA_PRODUCER_CONFIG__SASL_MECHANISM", "SCRAM-SHA-512")
    monkeypatch.setenv("KAFKA_PRODUCER_CONFIG__sasl.username", "ingest")

    settings = load_settings(_env_file=None)
    config = settings.librdkafka_config()

    assert config["bootstrap.servers"] == "127.0.0.1:9999"
    assert config["message.timeout.ms"] == 60_000
    assert config["compression.type"] == "zstd"
    assert config["sasl.mechanism"] == "SCRAM-SHA-512"
    assert config["sasl.username"] == "ingest"
    assert config["acks"] == "all"
    assert config["enable.idempotence"] is True
    assert config["batch.num.messages"] == 100
    assert config["linger.ms"] == 10


def test_public_view_hides_pass_through_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_PRODUCER_CONFIG__SASL_PASSWORD", "s3cret")

    view = load_settings(_env_file=None).public_view()

    assert "s3cret" not in repr(view)
    assert view["kafka_producer_config"] == ["sasl.password"]
    assert view["kafka_producer_timeout"] == "10s"


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        (
            "KAFKA_COMPRESSION_TYPE",
            "brotli",
            "invalid setting KAFKA_COMPRESSION_TYPE='brotli': Input should be "
            "'none', 'gzip', 'snappy', 'lz4' or 'zstd'",
        ),
        (
            "KAFKA_PRODUCER_TIMEOUT",
            "10",
            "invalid setting KAFKA_PRODUCER_TIMEOUT='10': expected a duration such",
        ),
        ("PORT", "eighty", "invalid setting PORT='eighty': Input should be a valid integer"),
        (
            "KAFKA_SERIALIZATION",
            "avro",
            "invalid setting KAFKA_SERIALIZATION='avro': Input should be 'json' or",
        ),
        ("KAFKA_TOPIC_ATTEMPTS", "bad topic!", "invalid setting KAFKA_TOPIC_ATTEMPTS='bad topic!': topic"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, expected: str
) -> None:
    monkeypatch.setenv(variable, value)

    with pytest.raises(SettingsError) as raised:
        load_settings(_env_file=None)

    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith(expected)


@pytest.mark.parametrize(
    ("workers", "configured", "in_use"),
    [(1, "auto", "memory"), (2, "auto", "host"), (1, "host", "host"), (4, "database", "database")],
)
def test_the_idempotency_store_follows_the_number_of_workers(
    workers: int, configured: str, in_use: str
) -> None:
    settings = load_settings(_env_file=None, workers=workers, idempotency_store=configured)
    assert settings.idempotency_store_kind == in_use


def test_a_per_process_idempotency_store_with_several_workers_is_refused() -> None:
    with pytest.raises(SettingsError) as raised:
        load_settings(_env_file=None, workers=2, idempotency_store="memory")
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith("invalid settings: IDEMPOTENCY_STORE=memory keeps keys per process")
    assert "WORKERS=2" in message


def test_service_refuses_to_start_with_a_bad_value() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "app"],
        env={"PATH": "/usr/bin:/bin", "KAFKA_COMPRESSION_TYPE": "brotli"},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "event-ingest: invalid setting KAFKA_COMPRESSION_TYPE='brotli': Input should be 'none', 'gzip', 'snappy', 'lz4' or 'zstd'"
    ]


def test_env_example_lists_every_setting() -> None:
    from app.config.settings import Settings

    listed = (ROOT / ".env.example").read_text()
    # KAFKA_PRODUCER_CONFIG is a prefix (KAFKA_PRODUCER_CONFIG__<NAME>=), shown with examples.
    missing = [name.upper() for name in Settings.model_fields if f"{name.upper()}=" not in listed]
    missing = [name for name in missing if f"# {name}__" not in listed]
    assert missing == [], f".env.example lacks {missing}"


def test_kafka_sasl_ssl_settings_become_librdkafka_properties() -> None:
    settings = load_settings(
        _env_file=None,
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_mechanism="SCRAM-SHA-512",
        kafka_sasl_username="ingest",
        kafka_sasl_password="s3cr3t-sasl",
        kafka_ssl_ca_location="/etc/ssl/kafka-ca.pem",
    )
    config = settings.librdkafka_config()
    assert config["security.protocol"] == "sasl_ssl"
    assert config["sasl.mechanism"] == "SCRAM-SHA-512"
    assert config["sasl.username"] == "ingest"
    assert config["sasl.password"] == "s3cr3t-sasl"
    assert config["ssl.ca.location"] == "/etc/ssl/kafka-ca.pem"
    assert config["ssl.endpoint.identification.algorithm"] == "https"
    assert "s3cr3t-sasl" not in repr(settings)
    assert "s3cr3t-sasl" not in str(settings.public_view())
    plain = load_settings(_env_file=None).librdkafka_config()
    assert plain["security.protocol"] == "plaintext"
    assert "sasl.password" not in plain


def test_secrets_are_not_repeated_in_setting_errors() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(
            _env_file=None,
            kafka_sasl_password=12,
            api_keys=[{"name": "x", "key": "hunter2-hunter2-hunter2", "scopes": ["nope"]}],
        )
    message = str(caught.value)
    assert "API_KEYS" in message
    assert "hunter2" not in message


def test_api_keys_setting_reads_a_json_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "API_KEYS", '[{"name": "ops", "sha256": "' + "a" * 64 + '", "scopes": ["admin", "metrics"]}]'
    )
    settings = load_settings(_env_file=None)
    assert [key.name for key in settings.api_keys] == ["ops"]
    assert settings.public_view()["api_keys"] == ["ops"]
    assert settings.auth_enabled is True  # the default: switched off only explicitly
