"""The learning-analytics component under the service's batch load (the last part of `make bench`).

Starts a development broker, the service (one worker, authentication on) and the analytics component
(from .venv-analytics, every aggregate on, at-least-once as on that broker), posts batches of 100
attempts at 32 connections for `--seconds`, and samples the component's metrics every second: the
attempts it consumed per second while the load ran and its lag (records behind the partitions'
ends, summed). Then it waits for the lag to reach zero and reports how long catching up took.
Prints a table and writes JSON to bench/results/.
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.database import migrations  # noqa: E402
from app.devbroker import DevBroker, free_port  # noqa: E402
from bench.run import PYTHON, _process, _service_env, _wrk  # noqa: E402

ANALYTICS_PYTHON = os.environ.get("ANALYTICS_PYTHON", str(ROOT / ".venv-analytics" / "bin" / "python"))


def _sample(port: int) -> tuple[float, float]:
    """(attempts consumed so far, lag summed over the input partitions) from the component's metrics."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    consumed = lag = 0.0
    for line in text.splitlines():
        if line.startswith("analytics_records_consumed_total{") and 'topic="user.attempts"' in line:
            consumed += float(line.rsplit(" ", 1)[1])
        elif (
            line.startswith("analytics_consumer_lag{")
            and "user.attempts" in line
            and "repartition" not in line
        ):
            lag += float(line.rsplit(" ", 1)[1])
    return consumed, lag


def run(options: argparse.Namespace) -> dict[str, object]:
    workdir = Path(tempfile.mkdtemp(prefix="bench-analytics-"))
    broker = None if options.brokers else DevBroker(free_port(), log_path=workdir / "broker.log").start()
    bootstrap = options.brokers or (broker.bootstrap if broker else "")
    try:
        database = f"sqlite:///{workdir / 'ingest.db'}"
        migrations.upgrade(database)
        port, metrics_port = free_port(), free_port()
        service = _service_env(bootstrap, database, port, 1, KAFKA_TOPIC_PARTITIONS="4")
        analytics = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "ANALYTICS_"))},
            "KAFKA_BROKERS": bootstrap, "KAFKA_TOPIC_PARTITIONS": "4", "LOG_LEVEL": "warning",
            "ANALYTICS_PORT": str(metrics_port), "ANALYTICS_STATE_DIR": str(workdir / "state"),
            "ANALYTICS_LAG_INTERVAL": "1s", "ANALYTICS_CONSUMER_CONFIG__SESSION_TIMEOUT_MS": "6000",
        }  # fmt: skip
        with (
            _process([PYTHON, "-m", "app"], service, port, workdir / "service.log"),
            _process(
                [ANALYTICS_PYTHON, "-m", "learning_analytics"],
                analytics,
                metrics_port,
                workdir / "analytics.log",
                ready_path="/ready",
            ) as analytics_pid,  # fmt: skip
        ):
            samples: list[tuple[float, float, float]] = []
            done = threading.Event()

            def sample() -> None:
                while not done.is_set():
                    samples.append((time.monotonic(), *_sample(metrics_port)))
                    time.sleep(1)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            started = time.monotonic()
            load = _wrk(port, "/v1/events/batch", "batch", 100, options.seconds, 32, 0, workdir)
            ended = time.monotonic()
            posted = load["requests"] * 100
            deadline = ended + options.catch_up_limit
            while time.monotonic() < deadline and (not samples or samples[-1][1] < posted):
                time.sleep(0.5)
            caught_up = time.monotonic()
            done.set()
            sampler.join(5)
            during = [(t, c, lag) for t, c, lag in samples if started <= t <= ended]
            rates = [(c2 - c1) / (t2 - t1) for (t1, c1, _), (t2, c2, _) in itertools.pairwise(during)]
            consumed = samples[-1][1] if samples else 0.0
            result: dict[str, object] = {
                "time": datetime.now(UTC).isoformat(),
                "analytics_pid": analytics_pid,
                "seconds": options.seconds,
                "service_events_per_s": round(posted / (load["duration_us"] / 1e6)),
                "posted": posted,
                "consumed": consumed,
                "analytics_events_per_s_median": round(statistics.median(rates)) if rates else 0,
                "analytics_events_per_s_overall": round(consumed / (caught_up - started)),
                "lag_median": statistics.median([lag for _, _, lag in during]) if during else None,
                "lag_max": max((lag for _, _, lag in during), default=None),
                "catch_up_s": round(caught_up - ended, 1),
                "caught_up": consumed >= posted,
            }
    finally:
        if broker is not None:
            broker.stop()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=30.0, help="how long the service is loaded")
    parser.add_argument(
        "--brokers", help="a running cluster (e.g. `make kafka-up`'s) instead of a development broker"
    )
    parser.add_argument("--catch-up-limit", type=float, default=300.0, help="how long to wait for lag 0")
    result = run(parser.parse_args())
    print(f"\nlearning analytics under the service's batch load ({result['seconds']} s, batches of 100 @32):")
    for name in ("service_events_per_s", "analytics_events_per_s_median", "analytics_events_per_s_overall",
                 "lag_median", "lag_max", "catch_up_s", "posted", "consumed", "caught_up"):  # fmt: skip
        print(f"  {name:34} {result[name]}")
    out = ROOT / "bench" / "results" / f"analytics-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    print(f"\nwritten to {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
