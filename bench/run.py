"""`make bench`: our service against its two ceilings, in one run, on this machine.

Starts a development broker, then for each configuration the service (WORKERS uvicorn workers) and
wrk as the load generator; also a bare FastAPI endpoint (the HTTP stack's ceiling) and raw
confluent-kafka produce (the client's ceiling). Prints a table and writes JSON to bench/results/.
Everything runs on 127.0.0.1, every run is bounded in time, and everything started is stopped by PID.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from string import Template
from typing import Any

import httpx
import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.database import migrations  # noqa: E402
from app.devbroker import DevBroker, free_port  # noqa: E402
from app.security.keys import generate_key, hash_key  # noqa: E402
from bench import validation as bench_validation  # noqa: E402

PYTHON = sys.executable
BENCH_KEY = generate_key()
TICKS = os.sysconf("SC_CLK_TCK")


@dataclass
class Result:
    """One measured scenario."""

    name: str
    target: str
    mode: str
    serialization: str
    compression: str
    connections: int
    duration_s: float
    requests_per_s: float
    events_per_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float
    errors: int
    rss_idle_mb: float | None = None
    rss_load_mb: float | None = None
    cpu_s_per_10k_events: float | None = None
    # Cores each process kept busy while measured: what bounds the figure on a shared machine.
    cores_service: float | None = None
    cores_broker: float | None = None
    cores_load_generator: float | None = None
    # With several workers: each one's cores. Shows whether wrk's long-lived connections are spread
    # evenly (with one shared listening socket they piled on one worker: see app/serving.py).
    cores_per_worker: list[float] | None = None
    # Events answered 429/503 (a batch's refused items come inside a 207): backpressure at work.
    events_refused: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


# --- processes -------------------------------------------------------------------------------


def _tree(pid: int) -> list[int]:
    pids, queue = [], [pid]
    while queue:
        current = queue.pop()
        pids.append(current)
        for task in Path(f"/proc/{current}/task").glob("*/children"):
            queue += [int(child) for child in task.read_text().split()]
    return pids


def _workers(pid: int) -> list[int]:
    """The processes serving requests: the uvicorn workers, or the service itself when it has none
    (multiprocessing's resource tracker is a child too, but serves nothing)."""
    children = [
        each
        for each in _tree(pid)[1:]
        if b"resource_tracker" not in Path(f"/proc/{each}/cmdline").read_bytes()
    ]
    return children or [pid]


def _rss_mb(pid: int) -> float:
    """Mean RSS of the workers."""
    workers = _workers(pid)
    total = 0
    for each in workers:
        for line in Path(f"/proc/{each}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return round(total / 1024 / len(workers), 1)


def _cpu_seconds(pid: int) -> float:
    return sum(_own_cpu_seconds(each) for each in _tree(pid))


def _own_cpu_seconds(pid: int) -> float:
    return stat_cpu_seconds(Path(f"/proc/{pid}/stat"))


def stat_cpu_seconds(stat: Path) -> float:
    """User + system CPU seconds from a /proc/.../stat file (a process's or one thread's)."""
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def _worker_cpu_seconds(pid: int) -> dict[int, float]:
    return {each: _own_cpu_seconds(each) for each in _workers(pid)}


@contextmanager
def _process(
    args: list[str],
    env: dict[str, str],
    port: int,
    log: Path,
    ready_path: str = "/healthz",
    cwd: Path = ROOT,
) -> Iterator[int]:
    """Start a server and wait for `ready_path` (not /openapi.json: building the schema costs RSS
    that a production process, probed on /healthz, never spends)."""
    with open(log, "wb") as out:
        process = subprocess.Popen(args, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"{args} exited: {log.read_text()[-2000:]}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}{ready_path}", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        else:
            raise RuntimeError(f"{args} not ready within 60s")
        yield process.pid
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


# --- load ------------------------------------------------------------------------------------


def uvicorn_command(app: str, port: int, workers: int, http: str = "auto") -> list[str]:
    """uvicorn serving a reference app (the bare endpoint, the design's floors): as many workers as
    the service, no access log, uvicorn's own HTTP protocol unless `http` names another (the
    service's is `app.http_protocol.HTTP_PROTOCOL`)."""
    return [PYTHON, "-m", "uvicorn", app, "--port", str(port), "--workers", str(workers),
            "--log-level", "warning", "--no-access-log", "--http", http]  # fmt: skip


def _wrk(
    port: int,
    path: str,
    mode: str,
    batch: int,
    seconds: float,
    connections: int,
    delay_ms: int,
    workdir: Path,
    pid: int | None = None,
    samples: list[float] | None = None,
) -> dict[str, Any]:
    """Run wrk with the generated script; while it runs, sample the service's RSS into `samples`."""
    script = workdir / f"{mode}-{delay_ms}.lua"
    template = Template((ROOT / "bench" / "load.lua.tmpl").read_text())
    script.write_text(
        template.substitute(
            MODE=mode,
            PATH=path,
            BATCH=batch,
            DELAY_MS=delay_ms,
            OCCURRED_AT=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),  # inside EVENT_MAX_AGE
            API_KEY=BENCH_KEY,
            RUN=uuid.uuid4().hex[:12],
        )
    )
    command = [
        "wrk", "-t", "2", "-c", str(connections), "-d", f"{max(1, round(seconds))}s", "--timeout", "10s",
        "-s", str(script), f"http://127.0.0.1:{port}",
    ]  # fmt: skip
    children_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as wrk:
        deadline = time.monotonic() + seconds + 30
        while wrk.poll() is None and time.monotonic() < deadline:
            if pid is not None and samples is not None:
                samples.append(_rss_mb(pid))
            time.sleep(0.5)
        if wrk.poll() is None:
            wrk.kill()
        output, errors = wrk.communicate(timeout=10)
    line = next((line for line in output.splitlines() if line.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no result: {output} {errors}")
    result: dict[str, Any] = orjson.loads(line.removeprefix("RESULT "))
    children_after = resource.getrusage(resource.RUSAGE_CHILDREN)  # wrk is the only child reaped meanwhile
    result["cpu_s"] = (children_after.ru_utime + children_after.ru_stime) - (
        children_before.ru_utime + children_before.ru_stime
    )
    return result


def _refusals(port: int) -> tuple[float, float]:
    """Events refused so far (queue full, rate limit...) and requests shed (503 overloaded), summed
    over workers."""
    text = httpx.get(
        f"http://127.0.0.1:{port}/metrics/prometheus",
        headers={"Authorization": f"Bearer {BENCH_KEY}"},
        timeout=10,
    ).text
    events = requests = 0.0
    for line in text.splitlines():
        if line.startswith("event_ingest_events_rejected_total{"):
            events += float(line.rsplit(" ", 1)[1])
        elif line.startswith("event_ingest_requests_shed_total "):
            requests += float(line.rsplit(" ", 1)[1])
    return events, requests


def _measure(
    name: str,
    target: str,
    pid: int,
    port: int,
    mode: str,
    options: argparse.Namespace,
    workdir: Path,
    serialization: str = "json",
    compression: str = "none",
    delay_ms: int = 0,
    connections: int | None = None,
) -> Result:
    path = "/v1/events/attempts" if mode == "single" else "/v1/events/batch"
    batch = 1 if mode == "single" else 100
    connections = connections or options.connections
    _wrk(port, path, mode, batch, options.warmup, connections, delay_ms, workdir)  # warm-up, not counted
    idle = _rss_mb(pid)
    refused_before = _refusals(port) if target == "service" else (0.0, 0.0)
    cpu_before = _cpu_seconds(pid)
    workers_before = _worker_cpu_seconds(pid)
    broker_before = _cpu_seconds(options.broker_pid) if options.broker_pid else 0.0
    samples: list[float] = []
    started = time.monotonic()
    result = _wrk(port, path, mode, batch, options.duration, connections, delay_ms, workdir, pid, samples)
    elapsed = time.monotonic() - started
    cpu = _cpu_seconds(pid) - cpu_before
    per_worker = [
        round((seconds - workers_before.get(worker, 0.0)) / elapsed, 2)
        for worker, seconds in _worker_cpu_seconds(pid).items()
    ]
    refused_after = _refusals(port) if target == "service" else (0.0, 0.0)
    refused = (refused_after[0] - refused_before[0]) + (refused_after[1] - refused_before[1]) * batch
    broker_cpu = _cpu_seconds(options.broker_pid) - broker_before if options.broker_pid else 0.0
    seconds = result["duration_us"] / 1e6
    rps = result["requests"] / seconds
    events = max(0.0, rps * batch - refused / seconds)  # accepted events only
    return Result(
        name=name,
        target=target,
        mode=mode,
        serialization=serialization,
        compression=compression,
        connections=connections,
        duration_s=round(seconds, 2),
        requests_per_s=round(rps),
        events_per_s=round(events),
        p50_ms=round(result["p50_us"] / 1000, 2),
        p95_ms=round(result["p95_us"] / 1000, 2),
        p99_ms=round(result["p99_us"] / 1000, 2),
        errors=result["status_errors"] + result["connect_errors"] + result["timeouts"],
        rss_idle_mb=idle,
        rss_load_mb=max(samples) if samples else None,
        cpu_s_per_10k_events=round(cpu / max(1.0, events * elapsed) * 10_000, 3),
        cores_service=round(cpu / elapsed, 2),
        cores_broker=round(broker_cpu / elapsed, 2) if options.broker_pid else None,
        cores_load_generator=round(result["cpu_s"] / elapsed, 2),
        cores_per_worker=per_worker if len(per_worker) > 1 else None,
        events_refused=round(refused),
    )


# --- scenarios -------------------------------------------------------------------------------


def _service_env(bootstrap: str, database: str, port: int, workers: int, **settings: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("KAFKA_", "DATABASE_URL"))}
    if database.startswith("sqlite:///"):
        # The host idempotency store's file beside the run's database, not the checkout's data/:
        # a store filled by earlier runs (and cold in the page cache) is another measurement.
        env["DATA_DIR"] = str(Path(database.removeprefix("sqlite:///")).with_suffix(".data"))
    env.update(
        KAFKA_BROKERS=bootstrap,
        DATABASE_URL=database,
        PORT=str(port),
        WORKERS=str(workers),
        LOG_LEVEL="warning",
        AUTH_ENABLED="true",
        API_KEYS=json.dumps(
            [{"name": "bench", "sha256": hash_key(BENCH_KEY), "scopes": ["ingest", "metrics"]}]
        ),
        **{key.upper(): value for key, value in settings.items()},
    )
    return env


def run(options: argparse.Namespace) -> list[Result]:
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: `apt-get install wrk` (make bench does it)")
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp, DevBroker(free_port()) as broker:
        workdir = Path(tmp)
        options.broker_pid = broker.pid
        configs = [("json", "none"), ("json", "zstd"), ("protobuf", "none"), ("protobuf", "zstd")]
        if options.quick:
            configs = configs[:1]
        for serialization, compression in configs:
            database = f"sqlite:///{workdir / f'{serialization}-{compression}.db'}"
            migrations.upgrade(database)
            port = free_port()
            env = _service_env(
                broker.bootstrap,
                database,
                port,
                options.workers,
                kafka_serialization=serialization,
                kafka_compression_type=compression,
                **dict(setting.split("=", 1) for setting in options.setting),
            )
            log = workdir / f"service-{serialization}-{compression}.log"
            with _process([PYTHON, "-m", "app"], env, port, log) as pid:
                # The development broker acknowledges slowly (~100 ms) for its first seconds after
                # topics are created: let that pass before anything is measured.
                _wrk(port, "/v1/events/attempts", "single", 1, options.settle, 4, 0, workdir)
                for mode in ("single", "batch"):
                    name = f"service {mode} {serialization}/{compression}"
                    print(f"… {name}", file=sys.stderr)
                    result = _measure(
                        name, "service", pid, port, mode, options, workdir, serialization, compression
                    )
                    results.append(result)
                    if (serialization, compression) == ("json", "none"):
                        # Fixed rate at half the measured maximum: latency when not saturated.
                        half = max(1.0, result.requests_per_s / 2)
                        delay_ms = max(1, round(options.connections / half * 1000))
                        name = f"service {mode} json/none at half rate"
                        print(f"… {name}", file=sys.stderr)
                        results.append(
                            _measure(name, "service", pid, port, mode, options, workdir, delay_ms=delay_ms)
                        )
                if (serialization, compression) == ("json", "none") and options.overload_connections:
                    # Far more records asked for than MAX_IN_FLIGHT_RECORDS: the service must refuse
                    # (429 + Retry-After, counted as errors here) rather than grow without bound.
                    name = f"service batch json/none overload ({options.overload_connections} connections)"
                    print(f"… {name}", file=sys.stderr)
                    results.append(
                        _measure(
                            name, "service", pid, port, "batch", options, workdir,
                            connections=options.overload_connections,
                        )
                    )  # fmt: skip
        port = free_port()
        bare_env = {**os.environ, "PYTHONPATH": str(ROOT)}
        bare = uvicorn_command("bench.bare_app:app", port, options.workers)
        with _process(bare, bare_env, port, workdir / "bare.log", "/openapi.json") as pid:
            for mode in ("single", "batch"):
                print(f"… bare FastAPI {mode}", file=sys.stderr)
                results.append(_measure(f"bare FastAPI {mode}", "bare", pid, port, mode, options, workdir))
        for serialization, compression in configs:
            print(f"… raw produce {serialization}/{compression}", file=sys.stderr)
            output = subprocess.run(
                [PYTHON, str(ROOT / "bench" / "raw_produce.py"), broker.bootstrap, serialization, compression,
                 str(options.duration)],
                capture_output=True, text=True, timeout=options.duration + 60, check=True, cwd=ROOT,
            ).stdout  # fmt: skip
            raw = orjson.loads(output.strip().splitlines()[-1])
            results.append(
                Result(
                    name=f"raw confluent-kafka produce {serialization}/{compression}",
                    target="raw",
                    mode="produce",
                    serialization=serialization,
                    compression=compression,
                    connections=0,
                    duration_s=raw["seconds"],
                    requests_per_s=raw["records_per_s"],
                    events_per_s=raw["records_per_s"],
                    p50_ms=0.0,
                    p95_ms=0.0,
                    p99_ms=0.0,
                    errors=0,
                )
            )
    return results


def _print(results: list[Result], options: argparse.Namespace) -> None:
    by_name = {result.name: result for result in results}
    print(
        f"each scenario: {options.duration:g} s measured after a {options.warmup:g} s warm-up, "
        f"{options.connections} connections (wrk, 2 threads), WORKERS={options.workers}, "
        f"batches of 100; events/s counts accepted events; err = answers >= 400; refused = events "
        f"answered 429/503 (alone or as items of a 207)"
    )
    header = f"{'scenario':44} {'events/s':>9} {'req/s':>8} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7} {'err':>4} {'refused':>8} {'RSS idle/load MB':>17} {'CPU s/10k':>9} {'cores svc/brk/load':>18} {'per worker':>10}"
    print(header)
    print("-" * len(header))
    for r in results:
        rss = f"{r.rss_idle_mb or 0:.0f}/{r.rss_load_mb or 0:.0f}" if r.rss_idle_mb else ""
        cpu = f"{r.cpu_s_per_10k_events:.2f}" if r.cpu_s_per_10k_events is not None else ""
        cores = (
            f"{r.cores_service:.2f}/{r.cores_broker or 0:.2f}/{r.cores_load_generator or 0:.2f}"
            if r.cores_service is not None
            else ""
        )
        split = "+".join(f"{each:.2f}" for each in r.cores_per_worker) if r.cores_per_worker else ""
        print(
            f"{r.name:44} {r.events_per_s:9.0f} {r.requests_per_s:8.0f} {r.p50_ms:7.2f} {r.p95_ms:7.2f} {r.p99_ms:7.2f} {r.errors:4d} {r.events_refused:8d} {rss:>17} {cpu:>9} {cores:>18} {split:>10}"
        )
    print()
    for mode in ("single", "batch"):
        ours = by_name.get(f"service {mode} json/none")
        bare = by_name.get(f"bare FastAPI {mode}")
        raw = by_name.get("raw confluent-kafka produce json/none")
        if ours and bare:
            print(
                f"{mode}: service / bare FastAPI requests = {ours.requests_per_s / max(1, bare.requests_per_s):.2f}"
            )
        if ours and raw:
            print(
                f"{mode}: service events / raw produce records = {ours.events_per_s / max(1, raw.events_per_s):.2f}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=float(os.environ.get("BENCH_DURATION", 8)))
    parser.add_argument("--warmup", type=float, default=float(os.environ.get("BENCH_WARMUP", 2)))
    parser.add_argument("--connections", type=int, default=int(os.environ.get("BENCH_CONNECTIONS", 32)))
    parser.add_argument("--workers", type=int, default=int(os.environ.get("WORKERS", 1)))
    parser.add_argument("--quick", action="store_true", help="JSON without compression only")
    parser.add_argument(
        "--settle",
        type=float,
        default=float(os.environ.get("BENCH_SETTLE", 10)),
        help="seconds of light load after each service start, before the first scenario",
    )
    parser.add_argument(
        "--setting",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a service setting for every run, e.g. MAX_CONCURRENT_REQUESTS=128 (repeatable)",
    )
    parser.add_argument(
        "--overload-connections",
        type=int,
        default=int(os.environ.get("BENCH_OVERLOAD_CONNECTIONS", 768)),
        help="connections of the overload run (batches of 100; 0 skips it)",
    )
    options = parser.parse_args()
    results = run(options)
    _print(results, options)
    validation = bench_validation.measure()  # after the load runs: nothing else competes for the cores
    print(
        f"\nvalidation per event (in-process, medians): built-in attempt {validation['builtin_us']:.1f} µs; "
        f"the same fields as a registered type {validation['registered_us']:.1f} µs "
        f"({validation['registered_us'] / validation['builtin_us']:.1f} times)"
    )
    out = ROOT / "bench" / "results" / f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    machine = {"cpus": os.cpu_count(), "python": platform.python_version(), "machine": platform.machine()}
    settings = {key: value for key, value in vars(options).items()}
    out.write_text(orjson.dumps({"machine": machine, "options": settings, "results": [asdict(r) for r in results],
                                             "validation_us_per_event": validation},
                                option=orjson.OPT_INDENT_2).decode())  # fmt: skip
    print(f"\nwritten to {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
