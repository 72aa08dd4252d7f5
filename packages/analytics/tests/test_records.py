"""Input records: what is used, and the reason a record is not."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson

from app.serialization.protobuf import ProtobufSerializer
from event_models.models import AttemptEvent
from learning_analytics import records

EVENT = {
    "event_type": "attempt", "event_id": "0b6f6d6e-7a0e-4a59-9d55-0b1c1a4f3e21", "user_id": "u1",
    "occurred_at": "2026-11-20T10:15:00+01:00", "client_attempt_id": "c1", "item_id": "i1",
    "correct": False, "quality": 0, "time_taken_ms": 1200,
}  # fmt: skip


def test_an_attempt_in_json() -> None:
    used = records.attempt(orjson.dumps(EVENT), [("content_type", b"application/json")])

    assert used == {
        "ts": int(datetime(2026, 11, 20, 9, 15, tzinfo=UTC).timestamp() * 1000), "event_id": EVENT["event_id"],
        "user_id": "u1", "item_id": "i1", "correct": False, "time_taken_ms": 1200, "quality": 0, "hints_used": 0,
    }  # fmt: skip


def test_an_attempt_in_protobuf_reads_the_same() -> None:
    serializer = ProtobufSerializer()
    raw = serializer.serialize(AttemptEvent.model_validate(EVENT))

    used = records.attempt(raw, [("content_type", serializer.content_type.encode())])

    assert used == records.attempt(orjson.dumps(EVENT), None)


def test_records_that_cannot_be_used_say_why() -> None:
    def reason(raw: bytes) -> str:
        bad = records.attempt(raw, None)
        assert isinstance(bad, records.Bad)
        assert bad.raw == raw
        return bad.reason

    assert reason(b"{not json").startswith("not JSON")
    assert reason(b"[1, 2]") == "not a JSON object but list"
    assert reason(orjson.dumps({**EVENT, "item_id": None})) == "item_id is missing or not a string"
    assert "impossible" in reason(orjson.dumps({**EVENT, "occurred_at": "1970-01-01T00:00:00Z"}))
    assert "impossible" in reason(orjson.dumps({**EVENT, "occurred_at": "2999-01-01T00:00:00Z"}))
    assert "no time zone" in reason(orjson.dumps({**EVENT, "occurred_at": "2026-11-20T10:00:00"}))
    assert reason(orjson.dumps({**EVENT, "quality": 9})) == "quality is missing or not an integer 0-5"
    bad_session = records.session(orjson.dumps({**EVENT, "session_id": "s", "status": "paused"}), None)
    assert isinstance(bad_session, records.Bad)
    assert bad_session.reason.startswith("status 'paused'")
