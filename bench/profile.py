"""`make profile`: where the service's CPU goes under load, from py-spy samples.

Starts a development broker and the service (one worker unless `--workers`), drives one scenario
with wrk while py-spy samples the worker, then prints the functions with the most samples,
inclusive and self, and writes the collapsed stacks (for flame graphs) under bench/results/.
`--shipped`: the settings docker-compose.yml and the Kubernetes ConfigMap ship
(`IDEMPOTENCY_STORE=database`, spool and keys on a PostgreSQL started here), as `bench/targets.py`
measures them. `--workers 2`: two workers, as the targets run them (and with them the host
idempotency store by default); the first is sampled.
"""

from __future__ import annotations

import argparse
import collections
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.database import migrations  # noqa: E402
from app.devbroker import DevBroker, free_port  # noqa: E402
from bench.postgres import ingest_database  # noqa: E402
from bench.run import PYTHON, _process, _service_env, _wrk, stat_cpu_seconds  # noqa: E402
from bench.targets import SHIPPED  # noqa: E402


def _summarize(collapsed: Path, top: int) -> None:
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        count = int(count_text)
        total += count
        frames = stack.split(";")
        for frame in set(frames):
            inclusive[frame] += count
        own[frames[-1]] += count
    print(f"{total} samples")
    if not total:
        print("py-spy took no samples: it needs ptrace rights (root, or CAP_SYS_PTRACE in a container)")
        return
    for title, counter in (("inclusive", inclusive), ("self", own)):
        print(f"\n--- {title} ---")
        for frame, count in counter.most_common(top):
            print(f"{100 * count / total:5.1f}%  {frame[:150]}")


def _thread_cpu(pid: int) -> dict[str, float]:
    """CPU seconds per thread, as `name/tid` (py-spy names Python threads by the same tid;
    librdkafka's own threads are invisible to py-spy)."""
    seconds: dict[str, float] = collections.defaultdict(float)
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            name = (task / "comm").read_text().strip()
            seconds[f"{name}/{task.name}"] += stat_cpu_seconds(task / "stat")
        except OSError:
            continue
    return dict(seconds)


def _first_worker(supervisor: int) -> int:
    """The lowest pid among the supervisor's worker processes (with WORKERS > 1 it serves none);
    multiprocessing's resource tracker, also its child, is not one."""
    children = Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split()
    workers = [
        int(child) for child in children if b"spawn_main" in Path(f"/proc/{child}/cmdline").read_bytes()
    ]
    return min(workers)


@contextmanager
def _database(workdir: Path, shipped: bool) -> Iterator[str]:
    """The service's database: PostgreSQL for the shipped settings, else SQLite in `workdir`."""
    if shipped:
        with ingest_database() as url:
            yield url
        return
    url = f"sqlite:///{workdir / 'spool.db'}"
    migrations.upgrade(url)
    yield url


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("mode", choices=["single", "batch"])
    parser.add_argument("--duration", type=float, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--top", type=int, default=45)
    parser.add_argument("--rate", type=int, default=100, help="py-spy samples per second")
    parser.add_argument(
        "--gil",
        action="store_true",
        help="sample only the thread holding the GIL (Python CPU; without it, threads waiting in C count too)",
    )
    parser.add_argument("--shipped", action="store_true", help="the shipped settings, on PostgreSQL")
    parser.add_argument("--workers", type=int, default=1, help="worker processes; the first is sampled")
    options = parser.parse_args()
    path = "/v1/events/attempts" if options.mode == "single" else "/v1/events/batch"
    batch = 1 if options.mode == "single" else 100
    out = ROOT / "bench" / "results" / f"profile-{options.mode}-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.txt"
    with (
        tempfile.TemporaryDirectory(prefix="profile-") as tmp,
        DevBroker(free_port()) as broker,
        _database(Path(tmp), options.shipped) as database,
    ):
        workdir = Path(tmp)
        port = free_port()
        settings = SHIPPED if options.shipped else {}
        env = _service_env(broker.bootstrap, database, port, options.workers, **settings)
        with _process([PYTHON, "-m", "app"], env, port, workdir / "service.log") as service:
            _wrk(port, path, options.mode, batch, 2, options.connections, 0, workdir)  # warm-up
            pid = service if options.workers == 1 else _first_worker(service)
            spy = subprocess.Popen(
                [str(Path(PYTHON).parent / "py-spy"), "record", "--pid", str(pid), "--format", "raw",
                 "--rate", str(options.rate), "--duration", str(round(options.duration)), "--output", str(out),
                 "--nonblocking", "--threads", *(["--gil"] if options.gil else [])],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            threads_before = _thread_cpu(pid)
            result = _wrk(port, path, options.mode, batch, options.duration, options.connections, 0, workdir)
            threads_after = _thread_cpu(pid)
            spy.wait(timeout=options.duration + 30)
    seconds = result["duration_us"] / 1e6
    print(f"{options.mode}: {result['requests'] / seconds * batch:.0f} events/s under py-spy"
          f"{f' ({options.workers} workers, one sampled)' if options.workers > 1 else ''}")  # fmt: skip
    print("cores per thread:", {
        name: round((threads_after.get(name, 0) - before) / seconds, 2)
        for name, before in sorted(threads_before.items())
        if threads_after.get(name, 0) - before > 0.01 * seconds
    })  # fmt: skip
    _summarize(out, options.top)
    print(f"\ncollapsed stacks: {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
