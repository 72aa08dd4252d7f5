"""Seen keys in an LMDB file that every worker process of this host opens: one store for them all.

The memory store is per process, so with several workers a repeat that lands on another worker
was published twice; the database store is shared by every instance but costs two database
transactions for each request. LMDB is a memory-mapped B-tree built for many
processes on one host: a request's keys are reserved in one write transaction (microseconds a
key, reserve and settle; several times less than the database store), under a lock shared by the
processes, without a server.

Commits are not fsynced: a worker that crashes loses nothing (the pages are in the kernel's
cache), an operating-system crash may forget the last keys, which can only let a repeat through
after that fault (at least once allows it). Two sub-databases: `keys` maps a key to its expiry
and stored answer, `expiry` orders the same keys by expiry so that expired keys, and the oldest
above IDEMPOTENCY_MAX_KEYS, are removed a few at a time by the requests that add keys.
"""

from __future__ import annotations

import asyncio
import hashlib
import struct
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import cast

import lmdb
import orjson

from app.idempotency.store import KeyGroup, Known, StoredResult, assign_groups

_EXPIRY = struct.Struct(">d")  # big-endian, so byte order is time order in the expiry index
_DIGEST_BYTES = 16
BYTES_PER_KEY = 2048  # the map's reserved (virtual) size per key; the file grows only as used
TRIM_SPARE = 64  # expired keys a request may remove beyond the number it adds
PURGE_BUDGET = 10_000  # expired keys one background purge removes at most (one short write transaction)

_environments: dict[Path, lmdb.Environment] = {}  # LMDB allows one open per file per process
_environments_lock = threading.Lock()


def open_environment(directory: Path, max_keys: int) -> lmdb.Environment:
    """This process's handle on the store in `directory`, opened on first use."""
    directory = directory.resolve()
    with _environments_lock:
        environment = _environments.get(directory)
        if environment is None:
            directory.mkdir(parents=True, exist_ok=True)
            environment = lmdb.open(
                str(directory),
                map_size=64 * 1024 * 1024 + max_keys * BYTES_PER_KEY,
                max_dbs=2,
                sync=False,
                metasync=False,
                readahead=False,
                # Commits write their pages straight into the shared map instead of copying each
                # out with a write(): the store's work a key ~40 % less. The file is then as large
                # as the map at once, sparse: `du` shows what it holds.
                writemap=True,
            )
            environment.reader_check()  # reader slots left by a killed worker
            _environments[directory] = environment
        return environment


def _stored_key(key: str) -> bytes:
    """A key's 16-byte BLAKE2b digest: LMDB keys stop at 511 bytes (an Idempotency-Key may be
    longer), and short fixed-size keys fit more to a page; a collision is a 2^-128 chance a pair."""
    return hashlib.blake2b(key.encode(), digest_size=_DIGEST_BYTES).digest()


class HostIdempotencyStore:
    """`IdempotencyStore` shared by the processes of one host through an LMDB file."""

    def __init__(
        self,
        directory: Path,
        window: timedelta,
        max_keys: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._environment = open_environment(directory, max_keys)
        self._keys = self._environment.open_db(b"keys")
        self._expiry = self._environment.open_db(b"expiry")
        self._window = window.total_seconds()
        self._max_keys = max_keys
        self._clock = clock

    async def reserve(self, groups: Sequence[KeyGroup]) -> list[Known | None]:
        if not any(groups):
            return [None for _ in groups]
        now = self._clock()
        expiry = _EXPIRY.pack(now + self._window)
        stored = {key: _stored_key(key) for group in groups for key, _ in group}
        with self._environment.begin(write=True) as txn:
            # The request's keys looked up, then written, by one C call each (the B-tree walks
            # without a Python call a key): the group semantics run on what was found.
            keys = txn.cursor(db=self._keys)
            found = dict(keys.getmulti(list(stored.values())))
            live: dict[str, StoredResult] = {}
            expired: dict[str, bytes] = {}  # key -> its entry in the expiry index
            for key, digest in stored.items():
                value = found.get(digest)
                if value is None:
                    continue
                if _EXPIRY.unpack_from(value)[0] > now:
                    live[key] = orjson.loads(value[_EXPIRY.size :])
                else:
                    expired[key] = value[: _EXPIRY.size] + digest
            answers, assigned = assign_groups(groups, live)
            if assigned:
                for key in expired.keys() & assigned.keys():  # taken over: its old expiry entry goes
                    txn.delete(expired[key], db=self._expiry)
                keys.putmulti(
                    [(stored[key], expiry + orjson.dumps(answer)) for key, answer in assigned.items()]
                )
                txn.cursor(db=self._expiry).putmulti([(expiry + stored[key], b"") for key in assigned])
            self._trim(txn, now, len(assigned) + TRIM_SPARE)
        return answers

    async def settle(self, completed: Mapping[str, StoredResult], released: Sequence[str]) -> None:
        if not completed and not released:
            return
        expires = self._clock() + self._window
        with self._environment.begin(write=True) as txn:
            for key, result in completed.items():
                stored = _stored_key(key)
                found = txn.get(stored, db=self._keys)
                if found is None:  # trimmed meanwhile (over the bound): stored again
                    self._put(txn, stored, expires, result)
                else:
                    txn.put(stored, found[: _EXPIRY.size] + orjson.dumps(result), db=self._keys)
            for key in released:
                self._remove(txn, _stored_key(key))

    def _put(self, txn: lmdb.Transaction, key: bytes, expires: float, result: StoredResult) -> None:
        txn.put(key, _EXPIRY.pack(expires) + orjson.dumps(result), db=self._keys)
        txn.put(_EXPIRY.pack(expires) + key, b"", db=self._expiry)

    def _remove(self, txn: lmdb.Transaction, key: bytes) -> None:
        found = txn.pop(key, db=self._keys)
        if found is not None:
            txn.delete(bytes(found[: _EXPIRY.size]) + key, db=self._expiry)

    async def purge_expired(self) -> int:
        return await asyncio.to_thread(self._purge, PURGE_BUDGET)

    def _purge(self, budget: int) -> int:
        with self._environment.begin(write=True) as txn:
            return self._trim(txn, self._clock(), budget)

    async def close(self) -> None:
        """Nothing to release: the LMDB environment is the process's, shared by its stores."""

    def _trim(self, txn: lmdb.Transaction, now: float, budget: int) -> int:
        """Remove expired keys, oldest first, then the oldest above the bound; at most `budget`.
        Returns how many."""
        excess = txn.stat(self._keys)["entries"] - self._max_keys
        # An entry sorts at or below `limit` when it has expired (its expiry is its first bytes):
        # compared as bytes, without unpacking. Listed by the cursor's C iterator, then deleted
        # in order from the first, each delete moving the cursor to the next.
        limit = _EXPIRY.pack(now) + b"\xff" * _DIGEST_BYTES
        cursor = txn.cursor(db=self._expiry)
        doomed: list[bytes] = []
        entries = cast(Iterator[bytes], cursor.iternext(values=False))  # bytes: no buffers=True
        for entry in entries:
            if len(doomed) >= budget or (len(doomed) >= excess and entry > limit):
                break
            doomed.append(entry)
        if doomed:
            cursor.first()
            for entry in doomed:
                cursor.delete()
                txn.delete(entry[_EXPIRY.size :], db=self._keys)
        return len(doomed)

    def count(self) -> int:
        """Keys held now, expired ones not yet removed included."""
        with self._environment.begin() as txn:
            return int(txn.stat(self._keys)["entries"])
