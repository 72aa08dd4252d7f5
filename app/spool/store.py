"""Spool storage: synchronous SQLAlchemy calls, run by the async callers through `asyncio.to_thread`.

Rows are claimed with a lease before the relay publishes them, so that several worker processes or
instances sharing one database never publish the same row at the same time; a crashed holder's
rows are free again once its lease runs out.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, LargeBinary, TextClause, bindparam, delete, func, insert, select, text, update
from sqlalchemy.orm import Session, aliased

from app.database.schema import SpooledRecord

CLAIM_LOCK_ID = 7_301_001  # PostgreSQL advisory lock serializing spool claims (any constant)
# Keys probed by one statement (a column each; PostgreSQL allows 1,664 columns, SQLite 2,000).
KEY_PROBES_PER_STATEMENT = 500


@dataclass(frozen=True, slots=True)
class NewRecord:
    """A record to spool: where it was going, its bytes, and why it is spooled."""

    event_id: str
    topic: str
    key: bytes | None
    value: bytes
    headers: list[tuple[str, str]]
    reason: str
    dlq_reason: str | None = None


@dataclass(frozen=True, slots=True)
class SpoolStats:
    """Spool depth and the age of its oldest record."""

    depth: int
    oldest: datetime | None

    def oldest_age_seconds(self, now: datetime | None = None) -> float:
        if self.oldest is None:
            return 0.0
        oldest = self.oldest if self.oldest.tzinfo else self.oldest.replace(tzinfo=UTC)
        return max(0.0, ((now or datetime.now(UTC)) - oldest).total_seconds())


class SpoolFullError(Exception):
    """The spool holds SPOOL_MAX_RECORDS already: the event is not accepted (503)."""


def _row(record: NewRecord, now: datetime) -> dict[str, Any]:
    return {
        "event_id": record.event_id,
        "topic": record.topic,
        "key": record.key,
        "value": record.value,
        "headers": [list(pair) for pair in record.headers],
        "reason": record.reason,
        "dlq_reason": record.dlq_reason,
        "attempts": 0,
        "created_at": now,
        "next_attempt_at": now,
    }


class SpoolStore:
    """The `spooled_records` table."""

    def __init__(self, engine: Engine, max_records: int) -> None:
        self.engine = engine
        self.max_records = max_records

    def add(self, records: Sequence[NewRecord], known_depth: int | None = None) -> None:
        """Insert records in order, in one transaction; SpoolFullError when over capacity."""
        if not self.add_groups([records], known_depth)[0]:
            raise self.full_error(known_depth)

    def add_groups(self, groups: Sequence[Sequence[NewRecord]], known_depth: int | None = None) -> list[bool]:
        """Insert several requests' records in one transaction, each group whole or not at all:
        a group that would take the spool over SPOOL_MAX_RECORDS is left out (False).

        One multi-row INSERT (Core, not ORM objects): during an outage every request's events come
        here, and the per-object work of the ORM cost more than the commit. `known_depth`, when
        given, stands for counting the table (the caller knows the spool is far from full).
        """
        now = datetime.now(UTC)
        with self.engine.begin() as connection:
            depth = known_depth
            if depth is None:
                depth = int(connection.scalar(select(func.count()).select_from(SpooledRecord)) or 0)
            written: list[bool] = []
            rows: list[dict[str, Any]] = []
            for records in groups:
                fits = depth + len(records) <= self.max_records
                written.append(fits)
                if fits:
                    depth += len(records)
                    rows += [_row(record, now) for record in records]
            if rows:
                connection.execute(insert(SpooledRecord), rows)
        return written

    def full_error(self, depth: int | None) -> SpoolFullError:
        held = "is full" if depth is None else f"holds {depth} records"
        return SpoolFullError(f"spool {held}; the limit is {self.max_records}")

    def stats(self) -> SpoolStats:
        with Session(self.engine) as session:
            depth = session.scalar(select(func.count()).select_from(SpooledRecord))
            # Ids grow with time: the first row by id is the oldest (an index lookup, where
            # min(created_at) read the whole table on every relay round of an outage).
            oldest = session.scalar(select(SpooledRecord.created_at).order_by(SpooledRecord.id).limit(1))
        return SpoolStats(depth=int(depth or 0), oldest=oldest)

    def keys_with_backlog(self, keys: Iterable[bytes]) -> set[bytes]:
        """Which of `keys` have records waiting: new records for them must queue behind.

        One statement of one index probe per key, not a scan of every row of those keys: its cost
        stays flat however deep the spool grows (a DISTINCT over `key IN (...)` read each waiting
        row of those keys).
        """
        wanted = list(set(keys))
        found: set[bytes] = set()
        if not wanted:
            return found
        with self.engine.connect() as connection:
            for start in range(0, len(wanted), KEY_PROBES_PER_STATEMENT):
                chunk = wanted[start : start + KEY_PROBES_PER_STATEMENT]
                row = connection.execute(
                    _key_probes(len(chunk)), {f"k{n}": key for n, key in enumerate(chunk)}
                )
                found.update(bytes(key) for key in row.one() if key is not None)
        return found

    def claim_due(self, owner: str, limit: int, lease: timedelta) -> list[SpooledRecord]:
        """Claim up to `limit` due, unclaimed rows in spool order, for `lease`; returns them detached."""
        now = datetime.now(UTC)
        earlier = aliased(SpooledRecord)
        # A row waits while an older row of the same key is not due or is held by another relay:
        # each key's records reach Kafka in the order they were spooled.
        blocked_by_older_row = (
            select(earlier.id)
            .where(earlier.key == SpooledRecord.key)
            .where(earlier.id < SpooledRecord.id)
            .where((earlier.next_attempt_at > now) | (earlier.claimed_until >= now))
            .exists()
        )
        with Session(self.engine, expire_on_commit=False) as session, session.begin():
            if self.engine.dialect.name == "sqlite":
                # The driver would begin the transaction only at the UPDATE, after the SELECT: take
                # the write lock first, so two processes (WORKERS > 1) cannot claim the same rows.
                session.connection().exec_driver_sql("BEGIN IMMEDIATE")
            elif self.engine.dialect.name == "postgresql":
                # One claim at a time across every relay: under READ COMMITTED a concurrent claim
                # would not see this one's rows as held, and could take a key's later rows while
                # its earlier ones are still being delivered (out of order). Held for milliseconds.
                session.execute(select(func.pg_advisory_xact_lock(CLAIM_LOCK_ID)))
            candidates = (
                select(SpooledRecord.id)
                .where(SpooledRecord.next_attempt_at <= now)
                .where((SpooledRecord.claimed_until.is_(None)) | (SpooledRecord.claimed_until < now))
                .where(~blocked_by_older_row)
                .order_by(SpooledRecord.id)
                .limit(limit)
            )
            if self.engine.dialect.name == "postgresql":
                candidates = candidates.with_for_update(skip_locked=True)
            ids = list(session.scalars(candidates))
            if not ids:
                return []
            session.execute(
                update(SpooledRecord)
                .where(SpooledRecord.id.in_(ids))
                .values(claimed_by=owner, claimed_until=now + lease)
            )
            rows = list(
                session.scalars(
                    select(SpooledRecord).where(SpooledRecord.id.in_(ids)).order_by(SpooledRecord.id)
                )
            )
        return rows

    def claim_owners(self) -> set[str]:
        """Who holds claims right now (`host:pid` of each relay)."""
        with Session(self.engine) as session:
            owners = session.scalars(
                select(SpooledRecord.claimed_by).where(SpooledRecord.claimed_by.is_not(None)).distinct()
            )
            return {owner for owner in owners if owner}

    def release_claims_of(self, owners: Iterable[str]) -> int:
        """Free the rows claimed by relays known to be dead, without waiting for their lease."""
        wanted = list(owners)
        if not wanted:
            return 0
        with Session(self.engine) as session, session.begin():
            result = session.execute(
                update(SpooledRecord)
                .where(SpooledRecord.claimed_by.in_(wanted))
                .values(claimed_by=None, claimed_until=None)
            )
            return int(getattr(result, "rowcount", 0) or 0)

    def delete(self, ids: Sequence[int]) -> None:
        """Remove delivered rows (only after Kafka acknowledged them)."""
        if not ids:
            return
        with Session(self.engine) as session, session.begin():
            session.execute(delete(SpooledRecord).where(SpooledRecord.id.in_(ids)))

    def release(self, ids: Sequence[int], error: str, retry_at: datetime, *, attempted: bool = True) -> None:
        """Free the claim and set when to try again; count an attempt only if one was made."""
        self._unclaim(
            ids,
            attempts=SpooledRecord.attempts + (1 if attempted else 0),
            last_error=error[:2000],
            next_attempt_at=retry_at,
        )

    def make_due(self) -> int:
        """Every row waiting out a backoff is due now (Kafka answers again); returns how many."""
        now = datetime.now(UTC)
        with Session(self.engine) as session, session.begin():
            result = session.execute(
                update(SpooledRecord).where(SpooledRecord.next_attempt_at > now).values(next_attempt_at=now)
            )
            return int(getattr(result, "rowcount", 0) or 0)

    def redirect_to_dlq(self, ids: Sequence[int], reason: str) -> None:
        """Mark rows to go to the dead-letter topic instead of their own, due at once."""
        self._unclaim(ids, dlq_reason=reason[:2000], next_attempt_at=datetime.now(UTC))

    def _unclaim(self, ids: Sequence[int], **values: Any) -> None:
        if not ids:
            return
        with Session(self.engine) as session, session.begin():
            session.execute(
                update(SpooledRecord)
                .where(SpooledRecord.id.in_(ids))
                .values(claimed_by=None, claimed_until=None, **values)
            )


@functools.lru_cache(maxsize=64)
def _key_probes(count: int) -> TextClause:
    """`SELECT (SELECT key … WHERE key = :k0 LIMIT 1), …` for `count` keys, built once per count."""
    table, column = SpooledRecord.__tablename__, SpooledRecord.key.key
    probes = ", ".join(f"(SELECT {column} FROM {table} WHERE {column} = :k{n} LIMIT 1)" for n in range(count))
    return text(f"SELECT {probes}").bindparams(*(bindparam(f"k{n}", type_=LargeBinary) for n in range(count)))
