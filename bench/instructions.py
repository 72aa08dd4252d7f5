"""`make bench-instructions`: CPU instructions an event costs in the worker's main thread, counted.

Timings on a shared 2-core machine swing by half within minutes, so a change of a few percent
cannot be seen in them; the instructions a piece of work executes hardly move. This runs the app
in process under valgrind's callgrind (one thread per output file, so librdkafka's threads stay
out of the figure), against a development broker outside valgrind, twice: with a few warm-up
requests only, and with as many more as asked; the difference over the events of the extra
requests is the main thread's cost of an event (HTTP parsing by uvicorn is not included: the
requests are handed to the app as ASGI calls). Slow (valgrind runs Python ~50 times slower):
minutes a figure. Compare figures of the same mode and count.

    python bench/instructions.py single --requests 200 [--no-fast-path]
    python bench/instructions.py batch --requests 10 [--idempotency-store host]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import tempfile
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


async def _serve(mode: str, requests: int, bootstrap: str, fast_path: bool, store: str) -> None:
    """The measured program (run under valgrind): the app, warm-up requests, then `requests` more."""
    from app.config.settings import load_settings
    from app.database import migrations
    from app.factory import create_app

    workdir = Path(tempfile.mkdtemp(prefix="instructions-"))
    database = f"sqlite:///{workdir / 'spool.db'}"
    migrations.upgrade(database)
    settings = load_settings(
        _env_file=None, kafka_brokers=bootstrap, database_url=database, auth_enabled=False,
        log_level="warning", data_dir=str(workdir), idempotency_store=store,
    )  # fmt: skip
    app = create_app(settings)
    if not fast_path:
        app.fast_ingest = None  # type: ignore[attr-defined]
    numbers = iter(range(1, 10**9))

    def request() -> tuple[str, bytes]:
        if mode == "single":
            event = _attempt(next(numbers))
            del event["event_type"]
            return "/v1/events/attempts", orjson.dumps(event)
        return "/v1/events/batch", orjson.dumps({"events": [_attempt(next(numbers)) for _ in range(BATCH)]})

    async with app.router.lifespan_context(app):
        for number in range(WARMUP_REQUESTS + requests):
            if number == WARMUP_REQUESTS:
                # The service's background tasks do one-time work (imports, a client of their own)
                # a moment after start-up; under valgrind the run without extra requests could end
                # before it, and the difference would charge it to the requests.
                await asyncio.sleep(SETTLE_SECONDS)
            status = await _post(app, *request())
            if status != 202:
                raise SystemExit(f"answered {status}")
        if not requests:
            await asyncio.sleep(SETTLE_SECONDS)


def _main_thread_instructions(
    mode: str, requests: int, bootstrap: str, fast_path: bool, store: str, out: Path
) -> int:
    command = [
        "valgrind", "--tool=callgrind", "--separate-threads=yes", f"--callgrind-out-file={out}",
        PYTHON, __file__, "--serve", mode, "--requests", str(requests), "--brokers", bootstrap,
        "--idempotency-store", store, *([] if fast_path else ["--no-fast-path"]),
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
    parser.add_argument("--requests", type=int, default=None, help="default: 200 single, 10 batches")
    parser.add_argument("--no-fast-path", dest="fast_path", action="store_false",
                        help="single events through the whole middleware stack")  # fmt: skip
    parser.add_argument("--idempotency-store", default="memory", choices=["memory", "host", "database"],
                        help="IDEMPOTENCY_STORE (database: the run's SQLite file)")  # fmt: skip
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--brokers", help=argparse.SUPPRESS)
    options = parser.parse_args()
    requests = options.requests if options.requests is not None else 200 if options.mode == "single" else 10
    if options.serve:
        asyncio.run(
            _serve(options.mode, requests, options.brokers, options.fast_path, options.idempotency_store)
        )
        return
    with tempfile.TemporaryDirectory(prefix="instructions-") as tmp, DevBroker(free_port()) as broker:
        counts = [
            _main_thread_instructions(options.mode, count, broker.bootstrap, options.fast_path,
                                      options.idempotency_store, Path(tmp) / f"n{count}")
            for count in (0, requests)
        ]  # fmt: skip
    events = requests * (1 if options.mode == "single" else BATCH)
    print(
        f"{options.mode}{'' if options.fast_path else ' (no fast path)'}, "
        f"IDEMPOTENCY_STORE={options.idempotency_store}: "
        f"{(counts[1] - counts[0]) / events:,.0f} instructions an event in the main thread "
        f"({requests} requests after {WARMUP_REQUESTS} of warm-up)"
    )


if __name__ == "__main__":
    main()
