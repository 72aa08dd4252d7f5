"""The figures of one window, as reducers over plain dicts (what Quix keeps in its state store and
changelog) and the records they become when the window closes (the pipeline adds the key's count of
late events to each)."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

State = dict[str, Any]


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")


def nearest_rank(values: list[int], fraction: float) -> int | None:
    """The nearest-rank percentile: the smallest value with at least `fraction` of them at or below it."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


# --- per learner: attempts, correct, accuracy, time taken (mean, p90), quality, distinct items, hints


def learner_start(event: State) -> State:
    state: State = {"user_id": event["user_id"], "attempts": 0, "correct": 0, "quality_sum": 0,
                    "times": [], "items": {}, "hints": 0}  # fmt: skip
    return learner_add(state, event)


def learner_add(state: State, event: State) -> State:
    state["attempts"] += 1
    state["correct"] += 1 if event["correct"] else 0
    state["quality_sum"] += event["quality"]
    state["times"].append(event["time_taken_ms"])
    state["items"][event["item_id"]] = 1
    state["hints"] += event["hints_used"]
    return state


def learner_record(window: State) -> State:
    state, attempts = window["value"], window["value"]["attempts"]
    times = state["times"]
    return {
        "user_id": state["user_id"],
        "window_start": iso(window["start"]),
        "window_end": iso(window["end"]),
        "attempts": attempts,
        "correct": state["correct"],
        "accuracy": state["correct"] / attempts,
        "time_taken_ms_mean": sum(times) / len(times),
        "time_taken_ms_p90": nearest_rank(times, 0.9),
        "quality_mean": state["quality_sum"] / attempts,
        "distinct_items": len(state["items"]),
        "hints_used": state["hints"],
    }


# --- per item: attempts and the share answered correctly (its difficulty)


def item_start(event: State) -> State:
    return item_add({"item_id": event["item_id"], "attempts": 0, "correct": 0}, event)


def item_add(state: State, event: State) -> State:
    state["attempts"] += 1
    state["correct"] += 1 if event["correct"] else 0
    return state


def item_record(window: State) -> State:
    state = window["value"]
    return {
        "item_id": state["item_id"],
        "window_start": iso(window["start"]),
        "window_end": iso(window["end"]),
        "attempts": state["attempts"],
        "correct": state["correct"],
        "correct_rate": state["correct"] / state["attempts"],
    }


# --- per learner per day: sessions started, completed, abandoned, and the time of the ended ones


def sessions_start(event: State) -> State:
    state: State = {"user_id": event["user_id"], "started": 0, "completed": 0, "abandoned": 0,
                    "seconds": 0.0}  # fmt: skip
    return sessions_add(state, event)


def sessions_add(state: State, event: State) -> State:
    state[event["status"]] += 1
    if event["status"] != "started":
        state["seconds"] += event["seconds"]
    return state


def sessions_record(window: State) -> State:
    state = window["value"]
    return {
        "user_id": state["user_id"],
        "day": iso(window["start"])[:10],
        "window_start": iso(window["start"]),
        "window_end": iso(window["end"]),
        "sessions_started": state["started"],
        "sessions_completed": state["completed"],
        "sessions_abandoned": state["abandoned"],
        "total_seconds": state["seconds"],
    }


# --- lateness, decided before the window exactly as Quix closes windows per key


def is_late(timestamp_ms: int, latest_ms: int, duration_ms: int, grace_ms: int) -> bool:
    """Whether the window of `timestamp_ms` closed already: its end is at or before the latest time
    seen for the key minus the grace (Quix's own rule, so no event reaches a closed window)."""
    window_end = timestamp_ms - timestamp_ms % duration_ms + duration_ms
    return window_end <= latest_ms - grace_ms
