"""How fast the console's pages answer with thousands of rules, event types and dead letters.

Starts the service (one worker, authentication on) on a development broker, seeded with the rules
and event types from files, fills the dead-letter topic and makes some audited changes, then asks each page several times with a
logged-in session and prints medians and p90s of the server's answer time (what the browser waits
for before it can draw; the console loads no script but htmx and no data from elsewhere).

    python bench/console.py [--rules 3000] [--event-types 3000] [--dead-letters 3000] [--repeats 15]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from confluent_kafka import Producer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.database import migrations  # noqa: E402
from app.devbroker import DevBroker, free_port  # noqa: E402
from app.security.keys import generate_key  # noqa: E402
from bench.run import PYTHON, _process, _service_env  # noqa: E402

PAGES = [
    "/console",
    "/console/overview/live",
    "/console/rules",
    "/console/event-types",
    "/console/event-types/bench.type_0",
    "/console/topics",
    "/console/topics/table",  # the page's Kafka part, fetched after it (every topic described)
    "/console/dlq",
    "/console/dlq/records",  # the page's Kafka part (the newest 500 dead letters read)
    "/console/keys",
    "/console/audit",
]
TARGET_MS = 200.0
RESULTS = ROOT / "bench" / "results"


def _seed_files(directory: Path, options: argparse.Namespace) -> dict[str, str]:
    """Rules and event types as the files a deployment seeds an empty database from (filling them
    one admin call at a time would take minutes: each change reloads the whole set)."""
    rules = [
        {
            "id": f"bench-rule-{n}",
            "name": f"Bench rule {n}",
            "event_types": ["activity"],
            "condition": {"field": "activity_type", "op": "==", "value": f"kind-{n}"},
            "topics": ["user.activities"],
            "priority": 1000 + n,
        }
        for n in range(options.rules)
    ]
    schema = {
        "type": "object",
        "properties": {"thing_id": {"type": "string"}, "size": {"type": "integer", "minimum": 0}},
        "required": ["thing_id"],
        "additionalProperties": False,
    }
    types = [
        {"name": f"bench.type_{n}", "description": f"type {n}", "owner": "bench", "schema": schema,
         "partition_key": "thing_id"}
        for n in range(options.event_types)
    ]  # fmt: skip
    (directory / "rules.yaml").write_text(json.dumps({"rules": rules}))  # JSON is YAML
    (directory / "types.json").write_text(json.dumps({"event_types": types}))
    return {
        "routing_rules_file": str(directory / "rules.yaml"),
        "event_types_files": str(directory / "types.json"),
        "event_types_max": str(options.event_types + 10),
    }


def _fill(client: httpx.Client, options: argparse.Namespace, bootstrap: str) -> None:
    """Dead letters straight into the DLQ topic, and some admin changes for the audit trail."""
    started = time.monotonic()
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    stamp = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    for n in range(options.dead_letters):
        value = json.dumps({"event_type": "activity", "user_id": f"user-{n}", "properties": {"n": n}})
        producer.produce(
            "dlq.events",
            key=f"user-{n}".encode(),
            value=value.encode(),
            headers=[
                ("event_id", str(uuid.uuid4())),
                ("event_type", "activity"),
                ("dlq_reason", "MSG_SIZE_TOO_LARGE (bench)" if n % 2 else "bench outage"),
                ("dlq_timestamp", stamp),
                ("original_topic", "user.activities"),
                ("dlq_attempts", "1"),
            ],
        )
    producer.flush(60)
    for n in range(options.audit_changes):
        client.patch(f"/admin/routing-rules/bench-rule-{n}", json={"enabled": n % 2 == 0}).raise_for_status()
    print(
        f"filled: {options.rules} rules, {options.event_types} event types (seed files), "
        f"{options.dead_letters} dead letters, {options.audit_changes} audited changes "
        f"in {time.monotonic() - started:.0f} s"
    )


def _time_pages(url: str, key: str, repeats: int) -> list[dict[str, Any]]:
    rows = []
    with httpx.Client(base_url=url, timeout=60) as browser:
        login = browser.post("/console/login", data={"api_key": key})
        if login.status_code != 303:
            raise SystemExit(f"console login failed: {login.status_code} {login.text[:200]}")
        for path in PAGES:
            timings, size = [], 0
            for attempt in range(repeats + 2):
                started = time.perf_counter()
                answer = browser.get(path)
                elapsed = (time.perf_counter() - started) * 1000
                answer.raise_for_status()
                size = len(answer.content)
                if attempt >= 2:  # the first two warm caches (templates, metadata)
                    timings.append(elapsed)
            rows_shown = len(re.findall(r"<tr", answer.text))
            if 'class="error"' in answer.text:
                raise SystemExit(f"{path} shows an error: {answer.text[:2000]}")
            timings.sort()
            rows.append(
                {
                    "page": path,
                    "median_ms": statistics.median(timings),
                    "p90_ms": timings[int(len(timings) * 0.9) - 1],
                    "kilobytes": size / 1024,
                    "table_rows": rows_shown,
                }
            )
    return rows


@contextmanager
def _broker(brokers: str) -> Iterator[str]:
    """`brokers` when given, else a development broker of this run's own."""
    if brokers:
        yield brokers
        return
    with DevBroker(free_port()) as broker:
        yield broker.bootstrap


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rules", type=int, default=3000)
    parser.add_argument("--event-types", type=int, default=3000)
    parser.add_argument("--dead-letters", type=int, default=3000)
    parser.add_argument("--audit-changes", type=int, default=150)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument(
        "--brokers",
        default="",
        help="a running cluster (e.g. `make kafka-up`'s) instead of a development broker",
    )
    options = parser.parse_args()
    key = generate_key()
    with tempfile.TemporaryDirectory(prefix="bench-console-") as tmp, _broker(options.brokers) as bootstrap:
        database = f"sqlite:///{Path(tmp) / 'console.db'}"
        migrations.upgrade(database)
        port = free_port()
        env = _service_env(bootstrap, database, port, 1, **_seed_files(Path(tmp), options))
        env["API_KEYS"] = json.dumps([{"name": "ops", "key": key, "scopes": ["admin", "metrics"]}])
        with _process([PYTHON, "-m", "app"], env, port, Path(tmp) / "service.log"):
            url = f"http://127.0.0.1:{port}"
            with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as client:
                _fill(client, options, bootstrap)
            rows = _time_pages(url, key, options.repeats)
    print(f"\n{'page':40} {'median':>9} {'p90':>9} {'KiB':>8} {'rows':>6}  under {TARGET_MS:.0f} ms")
    for row in rows:
        verdict = "yes" if row["median_ms"] < TARGET_MS else "NO"
        print(
            f"{row['page']:40} {row['median_ms']:7.1f}ms {row['p90_ms']:7.1f}ms {row['kilobytes']:8.0f} "
            f"{row['table_rows']:6}  {verdict}"
        )
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"console-{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    out.write_text(json.dumps({"options": vars(options), "pages": rows}, indent=2))
    print(f"\nwritten to {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
