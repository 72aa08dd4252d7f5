"""The window figures and the lateness rule, without a broker."""

from __future__ import annotations

from learning_analytics import aggregates

HOUR = 3_600_000


def attempt(correct: bool, quality: int, time_taken_ms: int, item: str, hints: int = 0) -> dict[str, object]:
    return {"user_id": "u", "item_id": item, "correct": correct, "quality": quality,
            "time_taken_ms": time_taken_ms, "hints_used": hints}  # fmt: skip


def test_learner_figures_of_a_window() -> None:
    events = [attempt(True, 5, 1000, "a"), attempt(False, 1, 3000, "b", 2), attempt(True, 3, 2000, "a", 1)]
    state = aggregates.learner_start(events[0])
    for event in events[1:]:
        state = aggregates.learner_add(state, event)
    record = aggregates.learner_record({"start": 0, "end": HOUR, "value": state})

    assert record == {
        "user_id": "u", "window_start": "1970-01-01T00:00:00Z", "window_end": "1970-01-01T01:00:00Z",
        "attempts": 3, "correct": 2, "accuracy": 2 / 3, "time_taken_ms_mean": 2000.0,
        "time_taken_ms_p90": 3000, "quality_mean": 3.0, "distinct_items": 2, "hints_used": 3,
    }  # fmt: skip


def test_p90_is_the_nearest_rank() -> None:
    assert aggregates.nearest_rank(list(range(1, 11)), 0.9) == 9
    assert aggregates.nearest_rank(list(range(1, 12)), 0.9) == 10
    assert aggregates.nearest_rank([7], 0.9) == 7
    assert aggregates.nearest_rank([], 0.9) is None


def test_a_window_is_closed_once_its_end_plus_the_grace_has_passed() -> None:
    grace = 5 * 60_000
    # An event of [0, 1h) when the key has seen 1h + 5 min: closed (Quix closes at end <= latest - grace).
    assert aggregates.is_late(10, HOUR + grace, HOUR, grace)
    assert not aggregates.is_late(10, HOUR + grace - 1, HOUR, grace)
    assert not aggregates.is_late(HOUR, HOUR + grace, HOUR, grace)  # the next window is open


def test_sessions_of_a_day() -> None:
    state = aggregates.sessions_start({"user_id": "u", "status": "started", "seconds": 0.0})
    state = aggregates.sessions_add(state, {"user_id": "u", "status": "completed", "seconds": 600.0})
    state = aggregates.sessions_add(state, {"user_id": "u", "status": "abandoned", "seconds": 60.0})
    record = aggregates.sessions_record({"start": 86_400_000, "end": 2 * 86_400_000, "value": state})

    assert record["day"] == "1970-01-02"
    assert (record["sessions_started"], record["sessions_completed"], record["sessions_abandoned"]) == (
        1,
        1,
        1,
    )
    assert record["total_seconds"] == 660.0
