"""`python -m app` / `event-ingest`: check settings, start a dev broker if needed, serve with uvicorn."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

from app import serving
from app.config.settings import Settings, SettingsError, load_settings
from app.devbroker import DevBroker
from app.observability.logging import configure_logging

logger = logging.getLogger("app.main")


@contextlib.contextmanager
def kafka_for(settings: Settings) -> Iterator[str]:
    """The configured cluster, or (KAFKA_BROKERS unset) a local dev broker with the topics created."""
    if settings.kafka_brokers:
        yield settings.kafka_brokers
        return
    Path(".run").mkdir(exist_ok=True)
    broker = DevBroker(settings.dev_broker_port, log_path=Path(".run/dev-broker.log"))
    broker.start()
    logger.warning(
        "KAFKA_BROKERS is not set: started a local development broker (memory only, data is lost on exit)",
        extra={"bootstrap": broker.bootstrap, "pid": broker.pid},
    )
    try:
        yield broker.bootstrap  # the service creates the topics it needs when it starts
    finally:
        pid = broker.pid  # None once stopped
        broker.stop()
        logger.info("development broker stopped", extra={"pid": pid})


def _prometheus_multiprocess_dir() -> None:
    """Several workers: Prometheus figures must be the sum over all of them (prometheus-client's
    multiprocess mode). The directory holds the values of this run only, so it starts empty."""
    directory = Path(os.environ.get("PROMETHEUS_MULTIPROC_DIR") or ".run/prometheus")
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory.resolve())


def main() -> None:
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        raise SystemExit(2) from None
    configure_logging(settings.log_level, settings.log_format)
    if settings.workers > 1 or os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        _prometheus_multiprocess_dir()
    with kafka_for(settings) as bootstrap:
        # Worker processes read their settings from the environment again: hand them the broker.
        os.environ["KAFKA_BROKERS"] = bootstrap
        # A worker drains for SHUTDOWN_DRAIN_DELAY, then flushes for SHUTDOWN_FLUSH_TIMEOUT.
        stop_timeout = (settings.shutdown_drain_delay + settings.shutdown_flush_timeout).total_seconds() + 10
        status = serving.serve(
            settings.host,
            settings.port,
            settings.workers,
            settings.log_level,
            settings.log_format,
            stop_timeout,
        )
    if status:
        raise SystemExit(status)


if __name__ == "__main__":
    main()
