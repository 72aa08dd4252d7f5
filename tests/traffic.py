"""A bounded client that keeps posting while a test breaks things, and the checks on what arrived."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

from tests.conftest import at
from tests.kafka_helpers import Record


@dataclass
class Traffic:
    """What a Poster sent and what it was told."""

    accepted: dict[str, tuple[str, int]] = field(default_factory=dict)  # event_id -> (user, seq)
    refused: list[int] = field(default_factory=list)  # status codes of 429/503 answers
    statuses: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    missing_retry_after: int = 0
    latencies: list[tuple[float, float]] = field(default_factory=list)  # (sent at, seconds to answer)
    spooled: int = 0

    def latency_percentile(self, share: float, since: float = 0.0, until: float = float("inf")) -> float:
        """Seconds within which `share` of the requests sent between `since` and `until` were answered."""
        chosen = sorted(seconds for sent, seconds in self.latencies if since <= sent <= until)
        if not chosen:
            return 0.0
        return chosen[min(len(chosen) - 1, int(share * len(chosen)))]


class Poster:
    """Posts activity events, one user per task, each user's events in sequence (`metadata.seq`);
    `batch` > 1 posts them `batch` at a time to /v1/events/batch."""

    def __init__(
        self, client: httpx.AsyncClient, users: list[str], pause: float = 0.02, batch: int = 1
    ) -> None:
        self.client = client
        self.users = users
        self.pause = pause
        self.batch = batch
        self.traffic = Traffic()
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._seq: dict[str, int] = defaultdict(int)

    def start(self) -> None:
        self._stop.clear()
        self._tasks = [asyncio.create_task(self._post_for(user)) for user in self.users]

    async def stop(self) -> Traffic:
        self._stop.set()
        await asyncio.gather(*self._tasks)
        return self.traffic

    async def run_for(self, seconds: float) -> None:
        self.start()
        await asyncio.sleep(seconds)
        await self.stop()

    def _event(self, user: str, seq: int) -> dict[str, Any]:
        return {
            "user_id": user,
            "occurred_at": at(120),
            "activity_type": "step",
            "metadata": {"seq": str(seq)},
        }

    async def _post_for(self, user: str) -> None:
        while not self._stop.is_set():
            seq = self._seq[user]
            if self.batch > 1:
                path = "/v1/events/batch"
                body: dict[str, Any] = {
                    "events": [
                        {"event_type": "activity", **self._event(user, seq + n)} for n in range(self.batch)
                    ]
                }
            else:
                path, body = "/v1/events/activities", self._event(user, seq)
            sent = time.monotonic()
            try:
                response = await self.client.post(path, json=body, timeout=30)
            except httpx.TransportError:
                continue
            self.traffic.latencies.append((sent, time.monotonic() - sent))
            self.traffic.statuses[str(response.status_code)] += 1
            if response.status_code in (200, 202):
                answer = response.json()
                results = answer["results"] if self.batch > 1 else [answer]
                for n, result in enumerate(results):
                    if result["status"] not in ("accepted", "spooled", "duplicate"):
                        raise AssertionError(f"unexpected result {result} in {response.text[:500]}")
                    self.traffic.accepted[result["event_id"]] = (user, seq + n)
                    self.traffic.spooled += result["status"] == "spooled"
                self._seq[user] += len(results)
            elif response.status_code in (429, 503):
                self.traffic.refused.append(response.status_code)
                if "Retry-After" not in response.headers:
                    self.traffic.missing_retry_after += 1
            else:
                raise AssertionError(f"unexpected answer {response.status_code}: {response.text}")
            await asyncio.sleep(self.pause)


@dataclass
class Arrival:
    """How the accepted events turned up in Kafka."""

    missing: set[str]
    duplicates: int
    order_violations: list[str]


def check_arrival(accepted: dict[str, tuple[str, int]], records: list[Record]) -> Arrival:
    """Every accepted event present (by event_id), duplicates counted, per-user order of first
    occurrences; records of events not in `accepted` are left out."""
    seen: set[str] = set()
    duplicates = 0
    first_by_user: dict[str, list[int]] = defaultdict(list)
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        event_id = record.headers["event_id"].decode()
        if event_id not in accepted:
            # Another phase's events: Apache Kafka keeps what was written before a broker restart
            # (the development broker loses it), and each phase numbers its users' events from 0.
            continue
        if event_id in seen:
            duplicates += 1
            continue
        seen.add(event_id)
        value = orjson.loads(record.value)
        first_by_user[value["user_id"]].append(int(value["metadata"]["seq"]))
    violations = [f"{user}: {seqs}" for user, seqs in first_by_user.items() if seqs != sorted(seqs)]
    return Arrival(missing=set(accepted) - seen, duplicates=duplicates, order_violations=violations)


async def wait_until_spool_empty(client: httpx.AsyncClient, within: float) -> dict[str, Any]:
    """Poll /metrics/publisher until the spool is empty (at most `within` s); returns the last snapshot."""
    deadline = time.monotonic() + within
    while True:
        metrics: dict[str, Any] = (await client.get("/metrics/publisher")).json()
        spool = metrics["spool"]
        assert isinstance(spool, dict)
        if spool["depth"] == 0 or time.monotonic() > deadline:
            return metrics
        await asyncio.sleep(0.25)
