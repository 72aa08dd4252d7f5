"""`ingest`: run, feed and inspect the event-ingest service from a terminal.

ingest send FILE|-                 post events from a JSON array or JSON lines, with progress
ingest tail TOPIC                  print records with key, partition, offset and headers
                                   (reads Kafka: needs the `kafka` extra)
ingest dlq list | dlq replay       dead letters, through the admin API
ingest rules list | rules test F   routing rules, through the admin API
ingest types list | show NAME      event types, through the admin API; `apply FILE` registers
       | apply FILE | validate     or evolves a file's types (event_types/*.json) and saves its
                                   rules; `validate NAME FILE` checks a sample event

The service itself runs with `event-ingest` (serve, migrate, dev-broker).
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time
import uuid
from collections.abc import Iterator
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, NoReturn, TextIO

import httpx
import orjson

DEFAULT_URL = os.environ.get("INGEST_URL", "http://127.0.0.1:8083")


class CliError(Exception):
    """A problem to tell the user in one line, without a traceback."""


# --- helpers ---------------------------------------------------------------------------------


def _api(args: argparse.Namespace, method: str, path: str, body: Any = None) -> Any:
    status, answer = _api_answer(args, method, path, body)
    if status >= 400:
        raise CliError(f"{method} {path} answered {status}: {orjson.dumps(answer).decode()}")
    return answer


def _api_answer(args: argparse.Namespace, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    """The status and JSON body of an admin call; 401/403 and an unreachable service are errors."""
    headers = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
    try:
        response = httpx.request(
            method, f"{args.url.rstrip('/')}{path}", json=body, headers=headers, timeout=120
        )
    except httpx.TransportError as exc:
        raise CliError(f"cannot reach the service at {args.url}: {exc}") from None
    if response.status_code in (401, 403):
        raise CliError(f"the service refused the API key ({response.status_code}): {response.text}")
    try:
        return response.status_code, response.json() if response.content else None
    except ValueError:
        return response.status_code, response.text


def _read_json(name: str) -> Any:
    try:
        return orjson.loads(Path(name).read_bytes())
    except orjson.JSONDecodeError as exc:
        raise CliError(f"{name}: not JSON ({exc})") from None


def _print_json(value: Any, out: TextIO = sys.stdout) -> None:
    out.write(orjson.dumps(value, option=orjson.OPT_INDENT_2).decode() + "\n")


def _read_events(source: str) -> Iterator[dict[str, Any]]:
    """Events from a JSON array or JSON lines, from a file or `-` (stdin)."""
    stream = sys.stdin.buffer if source == "-" else open(source, "rb")  # noqa: SIM115
    try:
        first = stream.read(1)
        while first.isspace():
            first = stream.read(1)
        if first == b"[":
            items = orjson.loads(first + stream.read())
            if not isinstance(items, list):
                raise CliError(f"{source}: expected a JSON array or JSON lines")
            for position, item in enumerate(items):
                yield _an_object(item, f"{source}: item {position}")
            return
        for line_number, line in enumerate(itertools.chain([first + stream.readline()], stream), start=1):
            if line.strip():
                try:
                    item = orjson.loads(line)
                except orjson.JSONDecodeError as exc:
                    raise CliError(f"{source}:{line_number}: not JSON: {exc}") from None
                yield _an_object(item, f"{source}:{line_number}")
    except FileNotFoundError:
        raise CliError(f"{source}: no such file") from None
    finally:
        if stream is not sys.stdin.buffer:
            stream.close()


def _an_object(item: Any, where: str) -> dict[str, Any]:
    if not isinstance(item, dict):
        raise CliError(f"{where}: an event is a JSON object, not {type(item).__name__}")
    return item


class Progress:
    """A one-line progress bar on stderr (only drawn on a terminal, or when forced)."""

    def __init__(self, total: int | None, force: bool = False) -> None:
        self.total = total
        self.done = 0
        self.rejected = 0
        self.started = time.monotonic()
        self.enabled = force or sys.stderr.isatty()

    def advance(self, done: int, rejected: int) -> None:
        self.done += done
        self.rejected += rejected
        if not self.enabled:
            return
        rate = self.done / max(1e-6, time.monotonic() - self.started)
        if self.total:
            filled = int(30 * self.done / self.total)
            bar = "#" * filled + "-" * (30 - filled)
            text = f"\r[{bar}] {self.done:,}/{self.total:,} {rate:,.0f}/s rejected {self.rejected:,}"
        else:
            text = f"\r{self.done:,} sent {rate:,.0f}/s rejected {self.rejected:,}"
        sys.stderr.write(text)
        sys.stderr.flush()

    def finish(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")


# --- commands --------------------------------------------------------------------------------


def cmd_send(args: argparse.Namespace) -> int:
    from ingest_client import EventClient

    total = None
    if args.source != "-" and Path(args.source).is_file():
        with open(args.source, "rb") as counting:
            is_array = counting.read(64).lstrip().startswith(b"[")
            counting.seek(0)
            total = None if is_array else sum(1 for line in counting if line.strip())
    progress = Progress(total, force=args.progress)
    rejected: list[dict[str, Any]] = []
    with EventClient(args.url, api_key=args.api_key, batch_size=args.batch_size) as client:
        batch: list[dict[str, Any]] = []
        for event in _read_events(args.source):
            batch.append(event)
            if len(batch) >= args.batch_size:
                _send_batch(client, batch, progress, rejected)
                batch = []
        if batch:
            _send_batch(client, batch, progress, rejected)
    progress.finish()
    for item in rejected[:20]:
        sys.stderr.write(f"rejected: {orjson.dumps(item).decode()}\n")
    print(
        f"sent {progress.done:,} events: {progress.done - progress.rejected:,} taken, {progress.rejected:,} rejected"
    )
    return 1 if progress.rejected else 0


def _send_batch(client: Any, batch: list[dict[str, Any]], progress: Progress, rejected: list[Any]) -> None:
    from pydantic import ValidationError

    from ingest_client.protocol import IngestError

    valid = []
    for event in batch:
        try:
            valid.append(_with_id(event))
        except ValidationError as exc:
            rejected.append({"event": event, "errors": exc.errors(include_url=False, include_input=False)})
    try:
        results = client.publish_many(valid)
    except IngestError as exc:
        raise CliError(str(exc)) from None
    failed = [result for result in results if not result.ok]
    rejected += [{"event_id": result.event_id, "errors": result.errors} for result in failed]
    progress.advance(len(batch), len(failed) + len(batch) - len(valid))


def _with_id(event: dict[str, Any]) -> Any:
    from ingest_client.protocol import as_event

    return as_event({"event_id": str(uuid.uuid4()), **event})


def cmd_tail(args: argparse.Namespace) -> int:
    try:
        from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, TopicPartition
    except ImportError:
        raise CliError(
            "tail reads Kafka with confluent-kafka: pip install 'event-ingest-client[kafka]'"
        ) from None

    brokers = args.brokers or os.environ.get("KAFKA_BROKERS") or "127.0.0.1:9092"
    consumer = Consumer(
        {
            "bootstrap.servers": brokers,
            "group.id": f"ingest-tail-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "socket.connection.setup.timeout.ms": 5000,
        }
    )
    try:
        metadata = consumer.list_topics(args.topic, timeout=10)
    except Exception as exc:
        consumer.close()
        raise CliError(f"cannot reach Kafka at {brokers}: {exc}") from None
    described = metadata.topics.get(args.topic)
    if described is None or described.error is not None or not described.partitions:
        consumer.close()
        raise CliError(f"no topic {args.topic!r} on {brokers}")
    start = OFFSET_BEGINNING if args.from_beginning else OFFSET_END
    consumer.assign([TopicPartition(args.topic, p, start) for p in described.partitions])
    shown = 0
    idle_since = time.monotonic()
    try:
        while args.max is None or shown < args.max:
            message = consumer.poll(0.5)
            if message is None or message.error() is not None:
                if not args.follow and time.monotonic() - idle_since > args.idle:
                    break
                continue
            idle_since = time.monotonic()
            _print_record(message, args.protobuf)
            shown += 1
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()
    sys.stderr.write(f"{shown} record(s)\n")
    return 0


def _print_record(message: Any, protobuf: bool) -> None:
    headers = {name: (value or b"").decode(errors="replace") for name, value in (message.headers() or [])}
    raw = message.value() or b""
    value: Any
    if protobuf or headers.get("content_type", "").startswith("application/x-protobuf"):
        try:
            from google.protobuf.json_format import MessageToDict

            from app.serialization.generated import events_pb2
        except ImportError:
            raise CliError(
                "--protobuf decodes with the service's generated classes: install event-ingest beside the client"
            ) from None

        value = MessageToDict(events_pb2.Event.FromString(raw), preserving_proto_field_name=True)
    else:
        try:
            value = orjson.loads(raw)
        except orjson.JSONDecodeError:
            value = raw.decode(errors="replace")
    key = message.key()
    record = {
        "topic": message.topic(),
        "partition": message.partition(),
        "offset": message.offset(),
        "key": key.decode(errors="replace") if isinstance(key, bytes) else key,
        "headers": headers,
        "value": value,
    }
    sys.stdout.write(orjson.dumps(record).decode() + "\n")
    sys.stdout.flush()


def cmd_dlq(args: argparse.Namespace) -> int:
    if args.dlq_command == "list":
        _print_json(_api(args, "GET", f"/admin/dlq?limit={args.limit}"))
        return 0
    body = {
        key: value
        for key, value in {
            "reason": args.reason,
            "event_type": args.event_type,
            "original_topic": args.original_topic,
            "since": args.since,
            "until": args.until,
            "dry_run": args.dry_run,
        }.items()
        if value not in (None, False)
    }
    _print_json(_api(args, "POST", "/admin/dlq/replay", body))
    return 0


def cmd_rules(args: argparse.Namespace) -> int:
    if args.rules_command == "list":
        _print_json(_api(args, "GET", "/admin/routing-rules"))
        return 0
    event = _read_json(args.file)
    _print_json(_api(args, "POST", "/admin/routing-rules/test", {"event": event}))
    return 0


def cmd_types(args: argparse.Namespace) -> int:
    if args.types_command == "list":
        for kind in _api(args, "GET", "/admin/event-types")["event_types"]:
            state = "built-in" if kind["builtin"] else ("enabled" if kind["enabled"] else "disabled")
            print(f"{kind['name']:40} v{kind['version']:<4} {state:9} {kind['owner']}")
        return 0
    if args.types_command == "show":
        _print_json(_api(args, "GET", f"/admin/event-types/{args.name}"))
        return 0
    if args.types_command == "validate":
        answer = _api(args, "POST", f"/admin/event-types/{args.name}/validate", _read_json(args.file))
        _print_json(answer)
        return 0 if answer["valid"] else 1
    return _apply(args, _read_json(args.file))


def _apply(args: argparse.Namespace, document: Any) -> int:
    """Register each type of the file, or bring an existing one up to it (a new schema version,
    checked by the service for compatibility; description, owner, enabled); then save its rules."""
    if not isinstance(document, dict) or not isinstance(document.get("event_types"), list):
        raise CliError(f'{args.file}: expected an object with "event_types": [...]')
    for definition in document["event_types"]:
        name = str(definition.get("name"))
        status, current = _api_answer(args, "GET", f"/admin/event-types/{name}")
        if status == 404:
            _api(args, "POST", "/admin/event-types", definition)
            print(f"{name}: registered")
            continue
        if status >= 400:
            raise CliError(f"GET /admin/event-types/{name} answered {status}: {current}")
        if definition.get("schema") != current["schema"]:
            status, answer = _api_answer(
                args, "PUT", f"/admin/event-types/{name}/schema", definition.get("schema")
            )
            if status == 409:
                problems = "; ".join(answer.get("problems") or [str(answer.get("detail"))])
                raise CliError(f"{name}: the new schema was refused: {problems}")
            if status >= 400:
                raise CliError(f"{name}: the new schema was refused ({status}): {answer}")
            print(f"{name}: schema version {answer['version']}")
        changes = {
            field: definition[field]
            for field in ("description", "owner", "enabled")
            if field in definition and definition[field] != current[field]
        }
        if changes:
            _api(args, "PATCH", f"/admin/event-types/{name}", changes)
            print(f"{name}: changed {', '.join(sorted(changes))}")
        fixed = [
            field
            for field in ("partition_key", "idempotency_fields", "compatibility")
            if field in definition and definition[field] != current[field]
        ]
        if fixed:  # what identifies and keys a type's events stays as registered
            print(
                f"{name}: {', '.join(fixed)} cannot change once registered (left as they are)",
                file=sys.stderr,
            )
    for rule in document.get("routing_rules", []):
        _api(args, "PUT", f"/admin/routing-rules/{rule.get('id')}", rule)
        print(f"routing rule {rule.get('id')}: saved")
    return 0


# --- wiring ----------------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    root = _Parser(prog="ingest", description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    root.add_argument("--version", action="version", version=f"ingest (event-ingest-client) {_version()}")
    root.add_argument("--url", default=DEFAULT_URL, help="service URL (INGEST_URL); default %(default)s")
    root.add_argument("--api-key", default=os.environ.get("INGEST_API_KEY"), help="API key (INGEST_API_KEY)")
    commands = root.add_subparsers(dest="command", required=True, parser_class=_Parser)

    send = commands.add_parser("send", help="post events from a JSON or JSON-lines file, or - for stdin")
    send.add_argument("source")
    send.add_argument("--batch-size", type=int, default=500)
    send.add_argument(
        "--progress", action="store_true", help="draw the progress bar even when not on a terminal"
    )
    send.set_defaults(run=cmd_send)

    tail = commands.add_parser("tail", help="print a topic's records")
    tail.add_argument("topic")
    tail.add_argument("--brokers", help="bootstrap servers (default KAFKA_BROKERS)")
    tail.add_argument("--from-beginning", action="store_true")
    tail.add_argument("--follow", action="store_true", help="keep waiting for new records")
    tail.add_argument("--max", type=int, help="stop after this many records")
    tail.add_argument(
        "--idle", type=float, default=3.0, help="without --follow: stop after this many idle seconds"
    )
    tail.add_argument("--protobuf", action="store_true", help="decode values as event_ingest.v1.Event")
    tail.set_defaults(run=cmd_tail)

    dlq = commands.add_parser("dlq", help="dead letters")
    dlq_commands = dlq.add_subparsers(dest="dlq_command", required=True)
    dlq_list = dlq_commands.add_parser("list")
    dlq_list.add_argument("--limit", type=int, default=20)
    replay = dlq_commands.add_parser("replay")
    for name in ("--reason", "--event-type", "--original-topic", "--since", "--until"):
        replay.add_argument(name)
    replay.add_argument("--dry-run", action="store_true")
    dlq.set_defaults(run=cmd_dlq)

    rules = commands.add_parser("rules", help="routing rules")
    rules_commands = rules.add_subparsers(dest="rules_command", required=True)
    rules_commands.add_parser("list")
    rules_test = rules_commands.add_parser("test", help="route the event in FILE (JSON with event_type)")
    rules_test.add_argument("file")
    rules.set_defaults(run=cmd_rules)
    types = commands.add_parser("types", help="event types")
    types_commands = types.add_subparsers(dest="types_command", required=True)
    types_commands.add_parser("list")
    types_show = types_commands.add_parser("show", help="a type with its latest schema and versions")
    types_show.add_argument("name")
    types_apply = types_commands.add_parser(
        "apply", help="register or evolve the types of FILE, save its rules"
    )
    types_apply.add_argument("file")
    types_validate = types_commands.add_parser("validate", help="check the event in FILE against type NAME")
    types_validate.add_argument("name")
    types_validate.add_argument("file")
    types.set_defaults(run=cmd_types)
    return root


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage error told in one line."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see --help)\n")


def _version() -> str:
    try:
        return version("event-ingest-client")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        code: int = args.run(args)
    except CliError as exc:
        return _fail(str(exc), 2)
    except OSError as exc:  # a file that cannot be read, a pipe closed under us, ...
        return _fail(f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc), 2)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # never a traceback: one line, and INGEST_DEBUG=1 shows the rest
        if os.environ.get("INGEST_DEBUG"):
            raise
        return _fail(f"unexpected {type(exc).__name__}: {exc} (INGEST_DEBUG=1 shows the traceback)", 1)
    return code


def _fail(message: str, status: int) -> int:
    sys.stderr.write(f"ingest: {' '.join(message.split())}\n")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
