"""`python bench/compare.py REV [REV ...]`: the service at several git revisions, measured side by side.

The machine is noisy (runs differ by up to ±30 %), so figures of two revisions are only comparable
when measured in the same run: each round measures every revision once, in turn, and the medians
over the rounds are printed. Each revision is checked out into a temporary git worktree and served
from there (one worker, or `--workers N`; authentication on), against one development broker, with
this tree's wrk script; everything runs on 127.0.0.1 and everything started is stopped.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from contextlib import ExitStack
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.database import migrations  # noqa: E402
from app.devbroker import DevBroker, free_port  # noqa: E402
from bench.postgres import ingest_database  # noqa: E402
from bench.run import PYTHON, _process, _service_env, _wrk  # noqa: E402
from bench.targets import SHIPPED  # noqa: E402

SCENARIOS = {"single": ("/v1/events/attempts", 1), "batch": ("/v1/events/batch", 100)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("revisions", nargs="+")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=6)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--modes", default="single,batch")
    # Two workers share the two cores with the broker and wrk: CPU spent outside a worker's main
    # thread (the broker's, librdkafka's) then counts, as it does not with one.
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--shipped", action="store_true", help="the shipped settings, on PostgreSQL")
    options = parser.parse_args()
    modes = options.modes.split(",")
    figures: dict[tuple[str, str], list[float]] = {}
    p50s: dict[tuple[str, str], list[float]] = {}  # median latencies in ms
    with ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="compare-")))
        broker = stack.enter_context(DevBroker(free_port()))
        shipped = stack.enter_context(ingest_database()) if options.shipped else None
        trees: dict[str, Path] = {}
        for revision in options.revisions:
            tree = workdir / f"tree-{len(trees)}"
            subprocess.run(
                ["git", "worktree", "add", "--detach", "-q", str(tree), revision], cwd=ROOT, check=True
            )
            trees[revision] = tree
        try:
            for round_number in range(options.rounds):
                for revision, tree in trees.items():
                    database = shipped or f"sqlite:///{workdir / f'{tree.name}-{round_number}.db'}"
                    migrations.upgrade(database)
                    port = free_port()
                    settings = SHIPPED if shipped else {}
                    env = _service_env(broker.bootstrap, database, port, options.workers, **settings)
                    log = workdir / f"{tree.name}.log"
                    with _process([PYTHON, "-m", "app"], env, port, log, cwd=tree):
                        for mode in modes:
                            path, batch = SCENARIOS[mode]
                            _wrk(port, path, mode, batch, 2, options.connections, 0, workdir)  # warm-up
                            result = _wrk(
                                port, path, mode, batch, options.duration, options.connections, 0, workdir
                            )
                            rate = result["requests"] / (result["duration_us"] / 1e6) * batch
                            p50 = result["p50_us"] / 1000
                            figures.setdefault((revision, mode), []).append(rate)
                            p50s.setdefault((revision, mode), []).append(p50)
                            print(
                                f"round {round_number + 1} {revision:>12} {mode:6} {rate:9.0f} events/s"
                                f" p50 {p50:.1f} ms",
                                file=sys.stderr,
                            )
        finally:
            for tree in trees.values():
                subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT, check=False)
    print(f"{'revision':>12} " + " ".join(f"{mode + ' ev/s (median)':>24} {'p50 ms':>6}" for mode in modes))
    for revision in options.revisions:
        cells = []
        for mode in modes:
            values = figures[(revision, mode)]
            rates = f"{statistics.median(values):9.0f} ({min(values):.0f}-{max(values):.0f})".rjust(24)
            cells.append(f"{rates} {statistics.median(p50s[(revision, mode)]):6.1f}")
        print(f"{revision:>12} " + " ".join(cells))


if __name__ == "__main__":
    main()
