"""`make bench-instructions`: CPU instructions an event costs in the worker's main thread, counted.

Timings on a shared 2-core machine swing by half within minutes, so a change of a few percent
cannot be seen in them; the instructions a piece of work executes move much less (two runs of the
same code differ by a few percent: the event loop's turns depend on when acknowledgements come
back, and a garbage collection lands in one run or the other). This runs the app
in process under valgrind's callgrind (one thread per output file, so librdkafka's threads stay
out of the figure), against a development broker outside valgrind, twice: with a few warm-up
requests only, and with as many more as asked; the difference over the events of the extra
requests is the main thread's cost of an event (HTTP parsing by uvicorn is not included: the
requests are handed to the app as ASGI calls). Slow (valgrind runs Python ~50 times slower):
minutes a figure. Compare figures of the same mode and count.

    python bench/instructions.py single [--requests 1000] [--no-fast-path]
    python bench/instructions.py batch [--requests 30] [--idempotency-store host]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.devbroker import DevBroker, free_port  # noqa: E402
from bench.run import PYTHON  # noqa: E402

WARMUP_REQUESTS = 3
SETTLE_SECONDS = 20.0
BATCH = 100


def _attempt(number: int) -> dict[str, Any]:
    return {
        "event_type": "attempt",
        "user_id": f"u{number % 1000}",
        "occurred_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "client_attempt_id": f"{os.getpid()}-{number}",
        "item_id": f"i{number % 50}",
        "correct": True,
        "quality": number % 6,
        "time_taken_ms": 1200,
    }


async def _post(app: Any, path: str, body: bytes) -> int:
    """One request as uvicorn would hand it to the app; the answer's status."""
    delivered = False
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if delivered:  # only a disconnect would come next
            await asyncio.sleep(3600)
        delivered = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    headers = [(b"host", b"127.0.0.1"), (b"content-type", b"application/json"),
               (b"content-length", str(len(body)).encode())]  # fmt: skip
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": path, "raw_path": path.encode(), "root_path": "", "query_string": b"",
        "headers": headers, "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000), "state": {},
    }  # fmt: skip
    await app(scope, receive, send)
    return status


async def _serve(options: argparse.Namespace) -> float:
    """The measured program (run under valgrind): the app, warm-up requests, a pause for the
    service's one-time background work (imports, a client of its own, a moment after start-up),
    then `--requests` more, then `--idle` seconds of nothing. The bodies are built first, as many
    in both runs, so that building them is not counted as the service's work; the run without
    requests idles as long as the other's requests took, so that the background work the service
    does meanwhile (timers, polls: proportional to the time, and valgrind stretches the time) is
    in both runs and cancels out."""
    from app.config.settings import load_settings
    from app.database import migrations
    from app.factory import create_app

    workdir = Path(tempfile.mkdtemp(prefix="instructions-"))
    database = f"sqlite:///{workdir / 'spool.db'}"
    migrations.upgrade(database)
    settings = load_settings(
        _env_file=None, kafka_brokers=options.brokers, database_url=database, auth_enabled=False,
        log_level="warning", data_dir=str(workdir), idempotency_store=options.idempotency_store,
    )  # fmt: skip
    app = create_app(settings)
    if not options.fast_path:
        app.fast_ingest = None  # type: ignore[attr-defined]
    numbers = iter(range(1, 10**9))

    def request() -> tuple[str, bytes]:
        if options.mode == "single":
            event = _attempt(next(numbers))
            del event["event_type"]
            return "/v1/events/attempts", orjson.dumps(event)
        return "/v1/events/batch", orjson.dumps({"events": [_attempt(next(numbers)) for _ in range(BATCH)]})

    async def post(body: tuple[str, bytes]) -> None:
        status = await _post(app, *body)
        if status != 202:
            raise SystemExit(f"answered {status}")

    bodies = [request() for _ in range(WARMUP_REQUESTS + options.prepared)]
    async with app.router.lifespan_context(app):
        for body in bodies[:WARMUP_REQUESTS]:
            await post(body)
        await asyncio.sleep(SETTLE_SECONDS)
        started = time.monotonic()
        for body in bodies[WARMUP_REQUESTS : WARMUP_REQUESTS + options.requests]:
            await post(body)
        took = time.monotonic() - started
        await asyncio.sleep(options.idle)
    return took


def _main_thread_instructions(options: argparse.Namespace, requests: int, idle: float, out: Path) -> int:
    command = [
        "valgrind", "--tool=callgrind", "--separate-threads=yes", f"--callgrind-out-file={out}",
        PYTHON, __file__, "--serve", options.mode, "--requests", str(requests),
        "--prepared", str(options.requests), "--idle", str(idle), "--timing", str(out.with_suffix(".seconds")),
        "--brokers", options.brokers, "--idempotency-store", options.idempotency_store,
        *([] if options.fast_path else ["--no-fast-path"]),
    ]  # fmt: skip
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=3600)
    main_thread = out.with_name(out.name + "-01")  # callgrind numbers threads from 1: the main one
    totals = re.search(r"^(?:summary|totals): (\d+)", main_thread.read_text(), re.MULTILINE)
    if totals is None:
        raise SystemExit(f"no totals in {main_thread}")
    return int(totals.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("mode", choices=["single", "batch"])
    parser.add_argument("--requests", type=int, default=None, help="default: 1000 single, 30 batches")
    parser.add_argument("--no-fast-path", dest="fast_path", action="store_false",
                        help="single events through the whole middleware stack")  # fmt: skip
    parser.add_argument("--idempotency-store", default="memory", choices=["memory", "host", "database"],
                        help="IDEMPOTENCY_STORE (database: the run's SQLite file)")  # fmt: skip
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--prepared", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--idle", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--timing", help=argparse.SUPPRESS)
    parser.add_argument("--brokers", help=argparse.SUPPRESS)
    options = parser.parse_args()
    if options.requests is None:
        options.requests = 1000 if options.mode == "single" else 30
    if options.serve:
        took = asyncio.run(_serve(options))
        if options.timing:
            Path(options.timing).write_text(str(took))
        return
    with tempfile.TemporaryDirectory(prefix="instructions-") as tmp, DevBroker(free_port()) as broker:
        options.brokers = broker.bootstrap
        measured = Path(tmp) / "requests"
        with_requests = _main_thread_instructions(options, options.requests, 0.0, measured)
        took = float(measured.with_suffix(".seconds").read_text())
        without = _main_thread_instructions(options, 0, took, Path(tmp) / "idle")
    events = options.requests * (1 if options.mode == "single" else BATCH)
    print(
        f"{options.mode}{'' if options.fast_path else ' (no fast path)'}, "
        f"IDEMPOTENCY_STORE={options.idempotency_store}: "
        f"{(with_requests - without) / events:,.0f} instructions an event in the main thread "
        f"({options.requests} requests after {WARMUP_REQUESTS} of warm-up; {took:.0f} s under valgrind)"
    )


if __name__ == "__main__":
    main()
