"""`make bench-outage` (and the last part of `make bench`): taking events while Kafka is down.

For each spool database (SQLite, and PostgreSQL started here with its default durable settings),
the service (WORKERS workers) takes batches of 100 at 32 connections with the development broker up,
then the broker is killed, the circuit breaker opens, and the same load is measured again: every
event now goes to the spool. Each is measured flat out (the rate) and at a fixed half of the rate
with Kafka up (the latency when not saturated: flat out, 32 connections queue for two cores and
the p50 is simply connections / requests per second, with Kafka up as much as down).
Targets: flat out, at least half of the normal rate; at half the normal rate, p99 under 250 ms.
Prints a table and writes JSON to bench/results/.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

import httpx
import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.database import migrations  # noqa: E402
from app.devbroker import DevBroker, free_port  # noqa: E402
from bench.postgres import ingest_database  # noqa: E402
from bench.run import BENCH_KEY, PYTHON, Result, _measure, _process, _service_env, _wrk  # noqa: E402

RATIO_TARGET = 0.5
P99_TARGET_MS = 250.0


def _wait_for_open_breaker(port: int, within: float = 60.0) -> None:
    """Post until every worker answers `spooled` at once (its breaker is open)."""
    deadline = time.monotonic() + within
    quick = 0
    with httpx.Client(
        base_url=f"http://127.0.0.1:{port}", headers={"Authorization": f"Bearer {BENCH_KEY}"}, timeout=30
    ) as client:
        while time.monotonic() < deadline and quick < 20:
            event = {
                "user_id": "probe",
                "occurred_at": datetime.now(UTC).isoformat(),
                "activity_type": "probe",
            }
            started = time.monotonic()
            answer = client.post("/v1/events/activities", json=event)
            fast = answer.json().get("status") == "spooled" and time.monotonic() - started < 0.05
            quick = quick + 1 if fast else 0
    if quick < 20:
        raise RuntimeError("the circuit breaker did not open within the time allowed")


def run(options: argparse.Namespace) -> list[Result]:
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="bench-outage-") as tmp:
        workdir = Path(options.logs or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        with ingest_database() as postgresql:
            databases = {"sqlite": f"sqlite:///{workdir / 'spool.db'}", "postgresql": postgresql}
            for name, database in databases.items():
                if options.database and name not in options.database:
                    continue
                migrations.upgrade(database)
                results += _one_database(name, database, options, workdir)
    return results


def _one_database(name: str, database: str, options: argparse.Namespace, workdir: Path) -> list[Result]:
    results: list[Result] = []
    broker = DevBroker(free_port(), log_path=workdir / f"broker-{name}.log").start()
    options.broker_pid = broker.pid
    try:
        port = free_port()
        settings = dict(setting.split("=", 1) for setting in options.setting)
        env = _service_env(broker.bootstrap, database, port, options.workers, **settings)
        with _process([PYTHON, "-m", "app"], env, port, workdir / f"service-{name}.log") as pid:
            _wrk(port, "/v1/events/attempts", "single", 1, options.settle, 4, 0, workdir)
            print(f"… {name}: Kafka up", file=sys.stderr)
            up = _measure(f"batch, Kafka up, spool {name}", "service", pid, port, "batch", options, workdir)
            # A fixed rate of half the Kafka-up maximum, with Kafka up and then down.
            delay_ms = max(1, round(options.connections / max(1.0, up.requests_per_s / 2) * 1000))
            half_up = _measure(
                f"batch, Kafka up, half rate, {name}", "service", pid, port, "batch", options, workdir,
                delay_ms=delay_ms,
            )  # fmt: skip
            broker.kill()
            options.broker_pid = None
            _wait_for_open_breaker(port)
            print(f"… {name}: Kafka down", file=sys.stderr)
            down = _measure(
                f"batch, Kafka down, spool {name}", "service", pid, port, "batch", options, workdir
            )
            half_down = _measure(
                f"batch, Kafka down, half rate, {name}", "service", pid, port, "batch", options, workdir,
                delay_ms=delay_ms,
            )  # fmt: skip
            results += [up, half_up, down, half_down]
    finally:
        broker.stop()
    return results


def _print(results: list[Result], options: argparse.Namespace) -> None:
    print(
        f"{options.duration:g} s measured after {options.warmup:g} s of warm-up, {options.connections} connections, "
        f"batches of 100, WORKERS={options.workers}; Kafka down = development broker killed, breaker open"
    )
    header = f"{'scenario':40} {'events/s':>9} {'p50 ms':>7} {'p99 ms':>7} {'err':>5} {'cores svc':>9}"
    print(header)
    print("-" * len(header))
    for r in results:
        print(
            f"{r.name:40} {r.events_per_s:9.0f} {r.p50_ms:7.1f} {r.p99_ms:7.1f} {r.errors:5d} {r.cores_service or 0:9.2f}"
        )
    print()
    for start in range(0, len(results) - 3, 4):
        up, half_up, down, half_down = results[start : start + 4]
        ratio = down.events_per_s / max(1.0, up.events_per_s)
        verdict = "met" if ratio >= RATIO_TARGET and half_down.p99_ms < P99_TARGET_MS else "NOT met"
        print(
            f"{down.name}: {ratio:.2f} of the rate with Kafka up (target >= {RATIO_TARGET}); at half "
            f"that rate p99 {half_down.p99_ms:.0f} ms (target < {P99_TARGET_MS:.0f}; "
            f"{half_up.p99_ms:.0f} ms with Kafka up): {verdict}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=float(os.environ.get("BENCH_DURATION", 8)))
    parser.add_argument("--warmup", type=float, default=float(os.environ.get("BENCH_WARMUP", 2)))
    parser.add_argument("--connections", type=int, default=int(os.environ.get("BENCH_CONNECTIONS", 32)))
    parser.add_argument("--workers", type=int, default=int(os.environ.get("WORKERS", 2)))
    parser.add_argument("--settle", type=float, default=float(os.environ.get("BENCH_SETTLE", 10)))
    parser.add_argument("--database", action="append", choices=("sqlite", "postgresql"), default=[])
    parser.add_argument("--setting", action="append", default=[], metavar="NAME=VALUE")
    parser.add_argument("--logs", help="keep the service and broker logs in this directory")
    options = parser.parse_args()
    results = run(options)
    _print(results, options)
    out = ROOT / "bench" / "results" / f"outage-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.write_text(
        orjson.dumps(
            {"options": vars(options), "results": [asdict(r) for r in results]}, option=orjson.OPT_INDENT_2
        ).decode()
    )
    print(f"\nwritten to {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
