"""`event-ingest`: the service's command (`python -m app` too).

event-ingest [serve] [--host H] [--port P] [--workers N] [--reload]
                                      check the settings, start a dev broker when KAFKA_BROKERS is
                                      unset, serve (the default command)
event-ingest migrate                  alembic upgrade head on DATABASE_URL
event-ingest dev-broker [--port P]    a local development broker until Ctrl-C
event-ingest analytics                the learning-analytics component (packages/analytics, in its
                                      own environment: `make analytics`)

Settings come from the environment and .env (see .env.example); a flag given here wins over them.
The producers' command, `ingest` (send, tail, dlq, rules), is the client package's.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import secrets
import shutil
import signal
import sys
from collections.abc import Iterator
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import NoReturn

from app import serving
from app.config.settings import Settings, SettingsError, load_settings
from app.devbroker import DevBroker
from app.observability.logging import configure_logging

logger = logging.getLogger("app.main")
PROG = "event-ingest"


class CommandError(Exception):
    """A problem to tell the operator in one line, without a traceback."""


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


def _settings() -> Settings:
    try:
        return load_settings()
    except SettingsError as exc:
        raise CommandError(str(exc)) from None


def cmd_serve(args: argparse.Namespace) -> int:
    # Flags go through the environment: the settings check them, and worker processes read them too.
    for name, value in (("HOST", args.host), ("PORT", args.port), ("WORKERS", args.workers)):
        if value is not None:
            os.environ[name] = str(value)
    settings = _settings()
    if args.reload and settings.workers > 1:
        raise CommandError("--reload runs one worker: drop --workers / WORKERS for development")
    configure_logging(settings.log_level, settings.log_format)
    if settings.workers > 1 or os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        _prometheus_multiprocess_dir()
    if settings.console_enabled and not settings.console_session_secret.get_secret_value():
        # One secret for all workers of this start, so a console login works whichever answers.
        os.environ["CONSOLE_SESSION_SECRET"] = secrets.token_urlsafe(32)
    with kafka_for(settings) as bootstrap:
        # Worker processes read their settings from the environment again: hand them the broker.
        os.environ["KAFKA_BROKERS"] = bootstrap
        # A worker drains for SHUTDOWN_DRAIN_DELAY, then flushes for SHUTDOWN_FLUSH_TIMEOUT.
        stop_timeout = (settings.shutdown_drain_delay + settings.shutdown_flush_timeout).total_seconds() + 10
        return serving.serve(
            settings.host,
            settings.port,
            settings.workers,
            settings.log_level,
            settings.log_format,
            stop_timeout,
            reload=args.reload,
        )


def cmd_migrate(args: argparse.Namespace) -> int:
    from app.database import migrations

    settings = _settings()
    try:
        migrations.upgrade(settings.sqlalchemy_url)
    except Exception as exc:  # the driver's own errors: unreachable server, bad credentials, ...
        detail = getattr(exc, "orig", None) or exc  # SQLAlchemy's wrapper adds a link, not information
        raise CommandError(
            f"migration failed on {settings.public_view()['database_url']}: {detail}"
        ) from None
    print(f"database at head: {settings.public_view()['database_url']}")
    return 0


def cmd_dev_broker(args: argparse.Namespace) -> int:
    with DevBroker(args.port) as broker:
        print(f"development broker on {broker.bootstrap} (pid {broker.pid}); Ctrl-C stops it", flush=True)
        stop = {signal.SIGINT, signal.SIGTERM}
        signal.pthread_sigmask(signal.SIG_BLOCK, stop)  # delivered to sigwait, not as KeyboardInterrupt
        signal.sigwait(stop)
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage error told in one line."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see --help)\n")


def cmd_analytics(_args: argparse.Namespace) -> int:
    try:  # imported by name: it is not installed in the service's own environment
        analytics = importlib.import_module("learning_analytics.main")
    except ImportError:
        raise CommandError(
            "the analytics component is the package event-ingest-analytics (packages/analytics), which "
            "needs an environment of its own (Quix Streams caps confluent-kafka and pydantic below the "
            "service's): `make analytics`, or .venv-analytics/bin/event-ingest analytics"
        ) from None
    analytics.main()
    return 0


def _version() -> str:
    try:
        return version("event-ingest")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"


def parser() -> argparse.ArgumentParser:
    root = _Parser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    root.add_argument("--version", action="version", version=f"{PROG} {_version()}")
    commands = root.add_subparsers(dest="command", parser_class=_Parser)

    # `event-ingest --port 9000` serves too; a subcommand's own defaults must not undo the root's flags.
    _serve_flags(root, default=None)
    _serve_flags(commands.add_parser("serve", help="run the service (the default command)"))
    migrate = commands.add_parser("migrate", help="alembic upgrade head on DATABASE_URL")
    migrate.set_defaults(run=cmd_migrate)
    broker = commands.add_parser("dev-broker", help="run a local development broker until Ctrl-C")
    broker.add_argument("--port", type=int, default=9092)
    broker.set_defaults(run=cmd_dev_broker)
    analytics = commands.add_parser("analytics", help="run the learning-analytics component (ANALYTICS_*)")
    analytics.set_defaults(run=cmd_analytics)
    root.set_defaults(run=cmd_serve)
    return root


def _serve_flags(command: argparse.ArgumentParser, default: object = argparse.SUPPRESS) -> None:
    command.add_argument("--host", default=default, help="address to bind (HOST)")
    command.add_argument("--port", type=int, default=default, help="port to listen on (PORT)")
    command.add_argument("--workers", type=int, default=default, help="worker processes (WORKERS)")
    command.add_argument(
        "--reload",
        action="store_true",
        default=False if default is None else default,
        help="development: restart when the code changes (one worker)",
    )
    command.set_defaults(run=cmd_serve)


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    try:
        status = args.run(args)
    except CommandError as exc:
        sys.stderr.write(f"{PROG}: {' '.join(str(exc).split())}\n")
        raise SystemExit(2) from None
    if status:
        raise SystemExit(status)


if __name__ == "__main__":
    main()
