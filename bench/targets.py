"""`make bench`, first part: the speed targets, for the defaults and for the settings we ship.

Two configurations of the service, both with WORKERS=2 and authentication on:
- `defaults`: the embedded defaults (SQLite spool, `IDEMPOTENCY_STORE=auto`, i.e. the host store);
- `shipped`: what docker-compose.yml and the Kubernetes ConfigMap set: `IDEMPOTENCY_STORE=database`
  with spool and keys on PostgreSQL (started here with its default, durable settings), JSON logs.
Each round starts each configuration, the bare FastAPI endpoint (the HTTP stack's ceiling, same
worker count) and the design's floors (`bench/floor_app.py`: HTTP, JSON and the Kafka client with
the service's records and producer settings, and nothing else; `floor-pydantic` also validates and
serializes with the service's event models; `floor-at-once`, single events only, sends each
request's records at once, `linger.ms` 0: the least latency this design has here) afresh and
measures single events and batches of 100 at several connection counts;
figures are the medians over the rounds of one run (the machine is noisy: only figures of one run
compare). After the rounds, the broker's own round trip at the latency target's concurrency (raw
confluent-kafka, `bench/raw_latency.py`), printed beside that target. Then a soak: the embedded
defaults (one worker) at the maximum batch rate for several minutes, RSS sampled. Prints the
targets with their ratios, and writes JSON and a PNG plot to bench/results/. Everything runs on
127.0.0.1, bounded in time, every process stopped by PID.

The broker is the development broker (Tansu, memory only) unless `--broker kafka`: Apache Kafka from
Maven Central (the tests' launcher), one node or, with `--kafka-nodes 3`, the three-node cluster
with the replication production runs (topics of replication factor 3, min.insync.replicas=2), on the
same two cores.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.database import migrations  # noqa: E402
from app.devbroker import DevBroker, free_port  # noqa: E402
from app.http_protocol import HTTP_PROTOCOL  # noqa: E402
from bench.postgres import ingest_database  # noqa: E402
from bench.run import (  # noqa: E402
    PYTHON,
    Result,
    _measure,
    _process,
    _rss_mb,
    _service_env,
    _wrk,
    uvicorn_command,
)
from tests.services.apache_kafka import KafkaCluster  # noqa: E402
from tests.services.brokers import Broker  # noqa: E402

WORKERS = 2
BATCH_EVENTS_TARGET = 100_000.0
SINGLE_RATIO_TARGET = 0.6
SINGLE_P50_TARGET_MS = 5.0
SINGLE_P99_TARGET_MS = 20.0
LATENCY_CONNECTIONS = 32  # the single-event latency target's concurrency
RSS_TARGET_MB = 300.0
SHIPPED = {"IDEMPOTENCY_STORE": "database", "LOG_FORMAT": "json", "ENVIRONMENT": "prod"}
# The design's floors (bench/floor_app.py), by the validation each does and the producer settings
# that differ from the service's: references, not targets. `floor-at-once` sends each request's
# records at once (linger.ms 0): the least latency a single event of this design has here, next to
# the broker's own round trip.
FLOORS: dict[str, tuple[str, dict[str, str]]] = {
    "floor": ("none", {}),
    "floor-pydantic": ("pydantic", {}),
    "floor-at-once": ("none", {"KAFKA_PRODUCER_BATCH_TIMEOUT": "0ms"}),
}
# The references measured with single events only.
SINGLE_ONLY = {"bare", "bare-one-write", "floor-at-once"}
# The bare endpoint on uvicorn as it ships (the target's reference), and on the service's own HTTP
# protocol, which sends a loop turn's answers together, each in one write (app/http_protocol.py):
# how much of the service's share of bare is that protocol's.
BARE = {"bare": "auto", "bare-one-write": HTTP_PROTOCOL}
REFERENCES = {*BARE, *FLOORS}


@dataclass
class Point:
    """One measurement of one round."""

    config: str  # defaults | shipped | a variant | a reference (BARE, FLOORS)
    mode: str  # single | batch
    connections: int
    round: int
    events_per_s: float
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int
    rss_load_mb: float | None
    cores_service: float | None
    cores_broker: float | None


def _point(config: str, round_number: int, result: Result) -> Point:
    return Point(
        config, result.mode, result.connections, round_number, result.events_per_s, result.requests_per_s,
        result.p50_ms, result.p99_ms, result.errors, result.rss_load_mb, result.cores_service,
        result.cores_broker,
    )  # fmt: skip


def _sweep(
    config: str,
    round_number: int,
    pid: int,
    port: int,
    options: argparse.Namespace,
    workdir: Path,
    modes: dict[str, list[int]],
) -> list[Point]:
    points = []
    for mode, counts in modes.items():
        for connections in counts:
            print(f"… round {round_number + 1} {config} {mode} @{connections}", file=sys.stderr)
            target = "bare" if config in REFERENCES else "service"  # (a reference counts no refusals)
            name = f"{config} {mode} @{connections}"
            result = _measure(name, target, pid, port, mode, options, workdir, connections=connections)
            points.append(_point(config, round_number, result))
    return points


@contextlib.contextmanager
def started_broker(options: argparse.Namespace, directory: Path) -> Iterator[Broker]:
    """The broker `--broker` names, started in `directory` and stopped afterwards."""
    broker: Broker
    if options.broker == "kafka":
        broker = KafkaCluster(directory, size=options.kafka_nodes)
    else:
        broker = DevBroker(free_port(), log_path=directory / "broker.log")
    directory.mkdir(parents=True, exist_ok=True)
    try:
        broker.start()
        yield broker
    finally:
        broker.stop()


def broker_settings(options: argparse.Namespace) -> dict[str, str]:
    """What the service is told of the broker beyond its address: on three nodes, the replication
    production runs (with acks=all a record is acknowledged once every in-sync replica has it, and
    the brokers' min.insync.replicas=2 refuses it with fewer than two)."""
    if options.broker == "kafka" and options.kafka_nodes >= 3:
        return {"KAFKA_TOPIC_REPLICATION_FACTOR": "3"}
    return {}


def broker_name(options: argparse.Namespace) -> str:
    if options.broker == "dev":
        return "development broker"
    if options.kafka_nodes == 1:
        return "Apache Kafka, 1 node"
    return f"Apache Kafka, {options.kafka_nodes} nodes (broker cores: node 1's)"


def measure_rounds(options: argparse.Namespace, workdir: Path, shipped_database: str) -> list[Point]:
    points: list[Point] = []
    modes = {"single": options.single_connections, "batch": options.batch_connections}
    with started_broker(options, workdir / "broker") as broker:
        options.broker_pid = broker.pid
        for round_number in range(options.rounds):
            for config in options.configs:
                config_modes = {"single": modes["single"]} if config in SINGLE_ONLY else modes
                if config in BARE:
                    port = free_port()
                    bare_env = {**os.environ, "PYTHONPATH": str(ROOT)}
                    bare = uvicorn_command("bench.bare_app:app", port, WORKERS, BARE[config])
                    with _process(bare, bare_env, port, workdir / f"{config}.log", "/openapi.json") as pid:
                        points += _sweep(config, round_number, pid, port, options, workdir, config_modes)
                    continue
                if config in FLOORS:
                    port = free_port()
                    # As the service's: no KAFKA_* setting of the caller's, the broker's own settings.
                    floor_env = {
                        key: value for key, value in os.environ.items() if not key.startswith("KAFKA_")
                    }
                    validation, producer_settings = FLOORS[config]
                    floor_env.update(broker_settings(options), PYTHONPATH=str(ROOT), KAFKA_BROKERS=broker.bootstrap,
                                     FLOOR_VALIDATION=validation, **producer_settings)  # fmt: skip
                    floor = uvicorn_command("bench.floor_app:app", port, WORKERS, HTTP_PROTOCOL)  # as served
                    with _process(floor, floor_env, port, workdir / f"{config}.log", "/healthz") as pid:
                        _wrk(port, "/v1/events/attempts", "single", 1, options.settle, 4, 0, workdir)
                        points += _sweep(config, round_number, pid, port, options, workdir, config_modes)
                    continue
                if config == "shipped":
                    database, settings = shipped_database, {**broker_settings(options), **SHIPPED}
                else:  # the defaults, or a variant of them
                    database = f"sqlite:///{workdir / f'{config}-{round_number}.db'}"
                    migrations.upgrade(database)
                    settings = {**broker_settings(options), **options.variants.get(config, {})}
                port = free_port()
                env = _service_env(broker.bootstrap, database, port, WORKERS, **settings)
                env["DATA_DIR"] = str(workdir / f"data-{config}-{round_number}")
                with _process([PYTHON, "-m", "app"], env, port, workdir / f"service-{config}.log") as pid:
                    # The development broker acknowledges slowly for its first seconds after topics
                    # are created, Apache Kafka's JVMs compile their hot paths, and a fresh process
                    # warms up: not measured.
                    _wrk(port, "/v1/events/attempts", "single", 1, options.settle, 4, 0, workdir)
                    points += _sweep(config, round_number, pid, port, options, workdir, modes)
        if LATENCY_CONNECTIONS in options.single_connections and options.rounds:
            options.raw_latency = raw_round_trip(broker.bootstrap, options)
    return points


def raw_round_trip(bootstrap: str, options: argparse.Namespace) -> dict[str, float] | None:
    """The broker's round trip at the latency target's concurrency, without the service: raw
    confluent-kafka, one producer per worker, each record produced again when acknowledged."""
    print(f"… raw produce, {LATENCY_CONNECTIONS} records outstanding", file=sys.stderr)
    replication = 3 if options.broker == "kafka" and options.kafka_nodes >= 3 else 1
    command = [PYTHON, "-m", "bench.raw_latency", bootstrap, str(LATENCY_CONNECTIONS),
               str(options.duration), "--producers", str(WORKERS), "--replication", str(replication)]  # fmt: skip
    try:
        output = subprocess.run(
            command, capture_output=True, text=True, timeout=options.duration + 180, check=True, cwd=ROOT
        ).stdout
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        # The rounds' figures matter more than this one: report without it.
        print(f"the broker's round trip was not measured: {exc}", file=sys.stderr)
        return None
    figures: dict[str, float] = orjson.loads(output.strip().splitlines()[-1])
    return figures


def soak(options: argparse.Namespace, workdir: Path) -> list[tuple[float, float, float]]:
    """(seconds, mean RSS per worker in MB, events/s of the last step) over `options.soak` seconds
    of batches at the maximum rate, the embedded defaults (one worker, memory idempotency store)."""
    samples: list[tuple[float, float, float]] = []
    with started_broker(options, workdir / "soak-broker") as broker:
        database = f"sqlite:///{workdir / 'soak.db'}"
        migrations.upgrade(database)
        port = free_port()
        env = _service_env(broker.bootstrap, database, port, 1, **broker_settings(options))
        env["DATA_DIR"] = str(workdir / "data-soak")
        with _process([PYTHON, "-m", "app"], env, port, workdir / "service-soak.log") as pid:
            samples.append((0.0, _rss_mb(pid), 0.0))
            started = time.monotonic()
            step = 10.0
            print(f"… soak: batches at the maximum rate for {options.soak:g} s", file=sys.stderr)
            while (elapsed := time.monotonic() - started) < options.soak:
                seconds = min(step, options.soak - elapsed)
                result = _wrk(port, "/v1/events/batch", "batch", 100, seconds, 32, 0, workdir)
                rate = round(result["requests"] * 100 / (result["duration_us"] / 1e6))
                samples.append((round(time.monotonic() - started, 1), _rss_mb(pid), rate))
    return samples


Key = tuple[str, str, int]


def medians(points: list[Point]) -> dict[Key, dict[str, float]]:
    """Per (config, mode, connections): the median of each figure over the rounds."""
    grouped: dict[Key, list[Point]] = {}
    for point in points:
        grouped.setdefault((point.config, point.mode, point.connections), []).append(point)
    return {
        key: {
            "events_per_s": statistics.median(p.events_per_s for p in group),
            "requests_per_s": statistics.median(p.requests_per_s for p in group),
            "p50_ms": statistics.median(p.p50_ms for p in group),
            "p99_ms": statistics.median(p.p99_ms for p in group),
            "cores_broker": statistics.median(p.cores_broker or 0.0 for p in group),
            "min_events_per_s": min(p.events_per_s for p in group),
            "max_events_per_s": max(p.events_per_s for p in group),
            "rounds": len(group),
        }
        for key, group in grouped.items()
    }


def verdicts(
    table: dict[Key, dict[str, float]], rss: list[tuple[float, float, float]], options: argparse.Namespace
) -> list[tuple[str, str, str, bool]]:
    """(target, configuration, reached, met) for every target that was measured."""
    rows: list[tuple[str, str, str, bool]] = []
    counts = options.single_connections or [0]  # a run of batches only measures no single events
    low, high = min(counts), max(counts)
    for config in (c for c in options.configs if c not in REFERENCES):
        batch = table.get((config, "batch", 32))
        if batch:
            reached = f"{batch['events_per_s']:,.0f} events/s"
            rows.append(("batches of 100, 32 conns: >= 100,000 events/s", config, reached,
                         batch["events_per_s"] >= BATCH_EVENTS_TARGET))  # fmt: skip
        single, bare = table.get((config, "single", high)), table.get(("bare", "single", high))
        if single and bare:
            ratio = single["requests_per_s"] / max(1.0, bare["requests_per_s"])
            reached = f"{ratio:.2f} ({single['requests_per_s']:,.0f} / {bare['requests_per_s']:,.0f} req/s)"
            rows.append((f"single, {high} conns: >= 0.6 of bare FastAPI", config, reached,
                         ratio >= SINGLE_RATIO_TARGET))  # fmt: skip
        single = table.get((config, "single", LATENCY_CONNECTIONS if LATENCY_CONNECTIONS in counts else low))
        if single:
            reached = f"p50 {single['p50_ms']:.1f} / p99 {single['p99_ms']:.1f} ms"
            met = single["p50_ms"] <= SINGLE_P50_TARGET_MS and single["p99_ms"] <= SINGLE_P99_TARGET_MS
            rows.append(("single, 32 conns: p50 <= 5 ms, p99 <= 20 ms", config, reached, met))
    if rss:
        final = rss[-1][1]
        rate = statistics.median(each[2] for each in rss[1:])
        reached = f"{final:.0f} MB after {rss[-1][0]:.0f} s at {rate:,.0f} events/s (idle {rss[0][1]:.0f} MB)"
        rows.append(
            ("RSS per worker after the soak <= 300 MB", "defaults, 1 worker", reached, final <= RSS_TARGET_MB)
        )
    return rows


def _shares(
    table: dict[Key, dict[str, float]], options: argparse.Namespace, reference: Key, figure: str
) -> list[str]:
    """Each measured configuration of the service's `figure` as a share of a reference's, at the
    reference's mode and connections: "defaults 0.55"."""
    _, mode, connections = reference
    return [
        f"{config} {table[(config, mode, connections)][figure] / max(1.0, table[reference][figure]):.2f}"
        for config in options.configs
        if config not in REFERENCES and (config, mode, connections) in table
    ]


def print_report(
    table: dict[Key, dict[str, float]], rows: list[tuple[str, str, str, bool]], options: argparse.Namespace
) -> None:
    print(
        f"WORKERS={WORKERS}, {broker_name(options)}, medians of {options.rounds} rounds of "
        f"{options.duration:g} s after {options.warmup:g} s of warm-up (min-max of events/s in brackets)"
    )
    header = f"{'configuration':10} {'mode':6} {'conns':>5} {'events/s':>22} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'broker cores':>12}"
    print(header)
    print("-" * len(header))
    for (config, mode, connections), figures in sorted(table.items()):
        spread = f"{figures['events_per_s']:,.0f} ({figures['min_events_per_s']:,.0f}-{figures['max_events_per_s']:,.0f})"
        print(
            f"{config:10} {mode:6} {connections:5d} {spread:>22} {figures['requests_per_s']:8,.0f} "
            f"{figures['p50_ms']:7.2f} {figures['p99_ms']:7.2f} {figures['cores_broker']:12.2f}"
        )
    print()
    for target, config, reached, met in rows:
        print(f"{target:48} {config:20} {reached:42} {'met' if met else 'NOT met'}")
    high = max(options.single_connections or [0])
    one_write = table.get(("bare-one-write", "single", high))
    if one_write:
        shares = _shares(table, options, ("bare-one-write", "single", high), "requests_per_s")
        reached = f"{one_write['requests_per_s']:,.0f} req/s"
        print(f"{f'  single, {high} conns, bare on one write':48} {'bare-one-write':20} {reached:42} "
              f"(share: {', '.join(shares)})")  # fmt: skip
    at_once = table.get(("floor-at-once", "single", LATENCY_CONNECTIONS))
    if at_once:
        reached = f"p50 {at_once['p50_ms']:.1f} / p99 {at_once['p99_ms']:.1f} ms"
        print(f"{f'  single, {LATENCY_CONNECTIONS} conns, the floor sent at once':48} {'floor-at-once':20} "
              f"{reached:42} ({at_once['requests_per_s']:,.0f} req/s)")  # fmt: skip
    for floor in (config for config in FLOORS if config in options.configs):
        reference = table.get((floor, "batch", 32))
        if reference is None:
            continue
        shares = _shares(table, options, (floor, "batch", 32), "events_per_s")
        reached = f"{reference['events_per_s']:,.0f} events/s"
        print(
            f"{'  batches, 32 conns, the design floor':48} {floor:20} {reached:42} (share: {', '.join(shares)})"
        )
    raw = getattr(options, "raw_latency", None)
    if raw:
        reached = f"p50 {raw['p50_ms']:.1f} / p99 {raw['p99_ms']:.1f} ms"
        print(
            f"{'  the broker alone, same concurrency':48} {'raw produce':20} {reached:42} "
            f"({raw['records_per_s']:,.0f} records/s, linger.ms 0)"
        )


def plot(
    table: dict[Key, dict[str, float]],
    rss: list[tuple[float, float, float]],
    options: argparse.Namespace,
    path: Path,
) -> None:
    import matplotlib

    matplotlib.use("Agg")  # no display: a file only
    import matplotlib.pyplot as plt

    figure, grid = plt.subplots(2, 2, figsize=(11, 8.5))
    axes = list(grid.flat)
    styles = {
        "defaults": "tab:blue", "shipped": "tab:orange", "bare": "tab:gray", "bare-one-write": "tab:cyan",
        "floor": "black", "floor-pydantic": "tab:olive", "floor-at-once": "tab:red",
    }  # fmt: skip
    for name, color in zip(
        options.variants, ["tab:green", "tab:purple", "tab:brown", "tab:pink"], strict=False
    ):
        styles[name] = color
    for config in options.configs:
        counts = [c for c in options.single_connections if (config, "single", c) in table]
        if counts:
            rates = [table[(config, "single", c)]["requests_per_s"] for c in counts]
            axes[0].plot(counts, rates, marker="o", color=styles[config], label=config)
            p50 = [table[(config, "single", c)]["p50_ms"] for c in counts]
            p99 = [table[(config, "single", c)]["p99_ms"] for c in counts]
            axes[1].plot(counts, p50, marker="o", color=styles[config], label=f"{config} p50")
            axes[1].plot(counts, p99, marker="^", linestyle="--", color=styles[config], label=f"{config} p99")
        counts = [c for c in options.batch_connections if (config, "batch", c) in table]
        if counts:
            rates = [table[(config, "batch", c)]["events_per_s"] for c in counts]
            axes[2].plot(counts, rates, marker="o", color=styles[config], label=config)
    axes[0].set(title="single events: requests/s", xlabel="connections", xscale="log")
    axes[1].set(title="single events: latency (ms)", xlabel="connections", xscale="log", yscale="log")
    axes[1].axhline(SINGLE_P50_TARGET_MS, color="green", linewidth=0.8)
    axes[1].axhline(SINGLE_P99_TARGET_MS, color="red", linewidth=0.8)
    axes[2].set(title="batches of 100: events/s", xlabel="connections", xscale="log")
    axes[2].axhline(BATCH_EVENTS_TARGET, color="green", linewidth=0.8)
    axes[3].plot([each[0] for each in rss], [each[1] for each in rss], marker=".", color=styles["defaults"])
    axes[3].axhline(RSS_TARGET_MB, color="red", linewidth=0.8)
    axes[3].set(title="soak, defaults, 1 worker: RSS (MB)", xlabel="seconds of batches", ylim=(0, None))
    axes[3].grid(alpha=0.3)
    for axis, counts in zip(
        axes[:3], [options.single_connections] * 2 + [options.batch_connections], strict=True
    ):
        axis.set_xticks(counts, [str(count) for count in counts])
        axis.minorticks_off()
        if axis.get_legend_handles_labels()[0]:
            axis.legend(fontsize="small")
        axis.grid(alpha=0.3)
    figure.suptitle(
        f"event-ingest, WORKERS={WORKERS}, {broker_name(options)}, medians of {options.rounds} rounds "
        f"({datetime.now(UTC):%Y-%m-%d})"
    )
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def _variant(text: str) -> tuple[str, dict[str, str]]:
    name, _, settings = text.partition(":")
    return name, dict(setting.split("=", 1) for setting in settings.split(",") if setting)


def _counts(text: str) -> list[int]:
    return [int(each) for each in text.split(",") if each]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=int(os.environ.get("BENCH_ROUNDS", 3)))
    parser.add_argument("--duration", type=float, default=float(os.environ.get("BENCH_DURATION", 6)))
    parser.add_argument("--warmup", type=float, default=float(os.environ.get("BENCH_WARMUP", 2)))
    parser.add_argument("--settle", type=float, default=None,
                        help="seconds of light load before each configuration's first point "
                        "(default 8; 30 with --broker kafka, whose JVMs compile as they warm up)")  # fmt: skip
    parser.add_argument("--single-connections", type=_counts, default=_counts("8,32,128,256"))
    parser.add_argument("--batch-connections", type=_counts, default=_counts("8,32,128"))
    parser.add_argument(
        "--configs",
        type=lambda text: text.split(","),
        default=["defaults", "shipped", *BARE, *FLOORS],
        help="which of defaults, shipped, bare, bare-one-write, floor, floor-pydantic and floor-at-once "
        "to measure (variants come on top)",
    )
    parser.add_argument("--soak", type=float, default=float(os.environ.get("BENCH_SOAK", 300)),
                        help="seconds of the memory soak (0 skips it)")  # fmt: skip
    parser.add_argument(
        "--variant",
        type=_variant,
        action="append",
        default=[],
        metavar="NAME:SETTING=VALUE,...",
        help="the defaults with other settings, measured as one more configuration (repeatable)",
    )
    parser.add_argument("--broker", choices=["dev", "kafka"], default="dev",
                        help="dev: the development broker (Tansu); kafka: Apache Kafka")  # fmt: skip
    parser.add_argument("--kafka-nodes", type=int, choices=[1, 3], default=1,
                        help="with --broker kafka: one node, or three with replication factor 3")  # fmt: skip
    options = parser.parse_args()
    if options.settle is None:
        options.settle = float(os.environ.get("BENCH_SETTLE", 30 if options.broker == "kafka" else 8))
    options.variants = dict(options.variant)
    options.configs += [name for name in options.variants if name not in options.configs]
    stamp = f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}"
    with tempfile.TemporaryDirectory(prefix="bench-targets-") as tmp:
        workdir = Path(tmp)
        with ingest_database() as shipped_database:
            points = measure_rounds(options, workdir, shipped_database) if options.rounds else []
        rss = soak(options, workdir) if options.soak > 0 else []
    table = medians(points)
    rows = verdicts(table, rss, options)
    print_report(table, rows, options)
    results = ROOT / "bench" / "results"
    picture = results / f"targets-{stamp}.png"
    plot(table, rss, options, picture)
    document: dict[str, Any] = {
        "options": {
            key: value for key, value in vars(options).items() if key not in ("broker_pid", "raw_latency")
        },
        "points": [asdict(point) for point in points],
        "medians": [{"config": c, "mode": m, "connections": n, **f} for (c, m, n), f in table.items()],
        "rss_soak": rss,
        "raw_latency": getattr(options, "raw_latency", None),
        "targets": [{"target": t, "config": c, "reached": r, "met": met} for t, c, r, met in rows],
    }
    (results / f"targets-{stamp}.json").write_bytes(orjson.dumps(document, option=orjson.OPT_INDENT_2))
    print(f"\nwritten to bench/results/targets-{stamp}.json and {picture.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
