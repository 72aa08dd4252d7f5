"""The memory store: one process's keys (the default with one worker), kept compact.

It holds up to IDEMPOTENCY_MAX_KEYS keys (a million by default) in the worker's heap, so each key's
size is the worker's memory under sustained load. A key is kept as its 12-byte BLAKE2b digest and
its answer as a few packed bytes: the event id as 16 bytes, the status and the topic list as
indexes into small tables of the values seen (there are only a few of each). Plain Python objects
(a str key, a tuple with a float and a dict of three entries, an ordered dict's links) took
~0.6 KB a key; this takes ~0.17 KB, also while keys come and go at the bound (see `_compact`).
Answers of another shape are kept as JSON.

Keys leave in arrival order (the oldest first: over the bound, or expired), through a queue of
references beside the dicts; a key no longer held (released) is skipped when it reaches the
front. A key taken over after its window first goes with the expired keys that arrived
before it, then arrives again.
"""

from __future__ import annotations

import hashlib
import struct
import sys
import time
from collections import deque
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

import orjson

from app.idempotency.store import KeyGroup, Known, StoredResult, reserve_groups

_HEADER = struct.Struct("<dBBI")  # expiry (monotonic seconds), flags, status index, topics index
_UUID_ID, _HAS_STATUS, _HAS_TOPICS, _JSON = 1, 2, 4, 8
_COMMON = _UUID_ID | _HAS_STATUS | _HAS_TOPICS
_ANSWER_KEYS = frozenset(("event_id", "status", "topics"))
_MAX_STATUSES = 255
SHARDS = 64
COMPACT_FROM_KEYS = 1024
COMPACT_ABOVE_BYTES_PER_KEY = 60  # a freshly copied dict takes ~40 bytes a key, one rebuilt ~80


def _digest(key: str) -> bytes:
    # 12 bytes: an object of 48 bytes where 16 take 64 (objects are allocated in steps of 16);
    # a collision among a million keys is a 10^-17 chance.
    return hashlib.blake2b(key.encode(), digest_size=12).digest()


class _AnswerCodec:
    """StoredResult <-> bytes, with this process's tables of statuses and topic lists."""

    def __init__(self) -> None:
        self._statuses: dict[str, int] = {}
        self._status_names: list[str] = []
        self._topic_lists: dict[tuple[str, ...], int] = {}
        self._topic_names: list[tuple[str, ...]] = []

    def encode(self, expires: float, answer: StoredResult) -> bytes:
        # The common shape first, on dict lookups alone: every key costs this twice.
        try:
            if len(answer) == 3:
                statuses, topic_lists = (
                    self._statuses[answer["status"]],
                    self._topic_lists[tuple(answer["topics"])],
                )
                identity = _uuid_bytes(answer["event_id"])
                if identity is not None:
                    return _HEADER.pack(expires, _COMMON, statuses, topic_lists) + identity
        except (KeyError, TypeError):
            pass
        return self._encode_any(expires, answer)

    def _encode_any(self, expires: float, answer: StoredResult) -> bytes:
        event_id, status, topics = answer.get("event_id"), answer.get("status"), answer.get("topics")
        status_index = self._status_index(status) if "status" in answer else 0
        topics_index = self._topics_index(topics) if "topics" in answer else 0
        if (
            not isinstance(event_id, str)
            or status_index is None
            or topics_index is None
            or not answer.keys() <= _ANSWER_KEYS
        ):
            return _HEADER.pack(expires, _JSON, 0, 0) + orjson.dumps(answer)
        flags = (_HAS_STATUS if "status" in answer else 0) | (_HAS_TOPICS if "topics" in answer else 0)
        identity = _uuid_bytes(event_id)
        if identity is not None:
            flags |= _UUID_ID
        payload = identity if identity is not None else event_id.encode()
        return _HEADER.pack(expires, flags, status_index, topics_index) + payload

    def decode(self, stored: bytes) -> tuple[float, StoredResult]:
        expires, flags, status_index, topics_index = _HEADER.unpack_from(stored)
        payload = stored[_HEADER.size :]
        if flags & _JSON:
            return expires, orjson.loads(payload)
        answer: dict[str, Any] = {"event_id": _uuid_text(payload) if flags & _UUID_ID else payload.decode()}
        if flags & _HAS_STATUS:
            answer["status"] = self._status_names[status_index]
        if flags & _HAS_TOPICS:
            answer["topics"] = list(self._topic_names[topics_index])
        return expires, answer

    def _status_index(self, status: object) -> int | None:
        """The status's index, None when it is not a str or the table is full."""
        index = self._statuses.get(status) if isinstance(status, str) else None
        if index is None and isinstance(status, str) and len(self._status_names) < _MAX_STATUSES:
            index = self._statuses[status] = len(self._status_names)
            self._status_names.append(status)
        return index

    def _topics_index(self, topics: object) -> int | None:
        """The topic list's index, None when it is not a list or tuple of str. Topic lists come
        from the routing rules: few, and the table only grows with new ones."""
        if not isinstance(topics, list | tuple) or not all(isinstance(topic, str) for topic in topics):
            return None
        key = tuple(topics)
        index = self._topic_lists.get(key)
        if index is None:
            index = self._topic_lists[key] = len(self._topic_names)
            self._topic_names.append(key)
        return index


def _uuid_bytes(text: object) -> bytes | None:
    """16 bytes when `text` is a UUID in its canonical form (lowercase, dashed), else None."""
    if not isinstance(text, str) or len(text) != 36 or not text.islower():
        return None
    if text[8] != "-" or text[13] != "-" or text[18] != "-" or text[23] != "-":
        return None
    try:
        raw = bytes.fromhex(text.replace("-", ""))
    except ValueError:
        return None
    return raw if len(raw) == 16 else None  # else more dashes than a UUID has


def _uuid_text(raw: bytes) -> str:
    digits = raw.hex()
    return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"


class MemoryIdempotencyStore:
    """Bounded keys with expiry, oldest out first; per process (each worker has its own)."""

    def __init__(self, window: timedelta, max_keys: int) -> None:
        self._window = window.total_seconds()
        self._max_keys = max_keys
        # digest -> packed expiry and answer, in shards, each compacted now and then (see _compact).
        self._shards: list[dict[bytes, bytes]] = [{} for _ in range(SHARDS)]
        self._next_compacted = 0
        self._arrivals: deque[bytes] = deque()  # digests, oldest first (some stale: see module doc)
        self._codec = _AnswerCodec()
        self._keys = 0  # kept as keys come and go: summing the shards on every reservation cost CPU

    def __len__(self) -> int:
        return self._keys

    def _put(self, shard: dict[bytes, bytes], digest: bytes, packed: bytes) -> bool:
        """Store a key's answer; True when the key was not held (it arrives)."""
        new = digest not in shard
        if new:
            self._keys += 1
        shard[digest] = packed
        return new

    def _drop(self, shard: dict[bytes, bytes], digest: bytes) -> bool:
        if shard.pop(digest, None) is None:
            return False
        self._keys -= 1
        return True

    def _shard(self, digest: bytes) -> dict[bytes, bytes]:
        return self._shards[digest[0] % SHARDS]

    async def reserve(self, groups: Sequence[KeyGroup]) -> list[Known | None]:
        answers = reserve_groups(groups, self._reserve, self._release)
        excess = self._keys - self._max_keys
        while excess > 0:
            digest = self._arrivals.popleft()
            if self._drop(self._shard(digest), digest):
                excess -= 1
        while self._arrivals and self._arrivals[0] not in self._shard(self._arrivals[0]):
            self._arrivals.popleft()  # released keys: their references go as soon as they reach the front
        self._compact()
        return answers

    def _compact(self) -> None:
        """Copy one shard (in turn) whose table is far larger than its keys need.

        When keys come and go at the bound, a dict's table fills with deleted slots, and CPython
        then rebuilds it at three times the live keys: twice the size it had while growing
        (~40 MB more for a million keys). A copy is sized for its keys alone. Small shards
        (thousands of keys), so a copy is short and memory moves a little at a time.
        """
        index = self._next_compacted
        self._next_compacted = (index + 1) % SHARDS
        shard = self._shards[index]
        if len(shard) > COMPACT_FROM_KEYS and sys.getsizeof(shard) > COMPACT_ABOVE_BYTES_PER_KEY * len(shard):
            self._shards[index] = dict(shard)

    def _reserve(self, key: str, provisional: StoredResult) -> StoredResult | None:
        now = time.monotonic()
        digest = _digest(key)
        shard = self._shard(digest)
        found = shard.get(digest)
        if found is not None:
            expires, answer = self._codec.decode(found)
            if expires > now:
                return answer
            self._purge(now)  # the keys that arrived before it are expired too, and it goes with them
            self._drop(shard, digest)  # taken over: it arrives again
        self._put(shard, digest, self._codec.encode(now + self._window, provisional))
        self._arrivals.append(digest)
        return None

    def _release(self, key: str) -> None:
        digest = _digest(key)
        self._drop(self._shard(digest), digest)

    async def settle(self, completed: Mapping[str, StoredResult], released: Sequence[str]) -> None:
        expires = time.monotonic() + self._window
        for key, result in completed.items():
            digest = _digest(key)
            shard = self._shard(digest)
            if self._put(shard, digest, self._codec.encode(expires, result)):
                self._arrivals.append(digest)  # dropped over the bound meanwhile: arrives again
        for key in released:
            self._release(key)

    async def purge_expired(self) -> int:
        return self._purge(time.monotonic())

    def _purge(self, now: float) -> int:
        purged = 0
        while self._arrivals:
            digest = self._arrivals[0]
            shard = self._shard(digest)
            found = shard.get(digest)
            if found is not None:
                expires, _ = self._codec.decode(found)
                if expires > now:
                    break  # the oldest arrival still in its window (or a later arrival of it)
                self._drop(shard, digest)
                purged += 1
            self._arrivals.popleft()
        return purged

    async def close(self) -> None:
        for shard in self._shards:
            shard.clear()
        self._arrivals.clear()
        self._keys = 0
