"""The overview's history: rates between samples, latency quantiles from histogram buckets, the chart."""

from __future__ import annotations

import math

import pytest

from app.console.charts import line_chart
from app.console.history import Sample, ServiceHistory, counts_of, quantile


async def _never() -> Sample:
    raise AssertionError("not sampled in these tests")


def test_rates_are_differences_per_second_between_samples() -> None:
    history = ServiceHistory(_never, interval=5, span=60)
    history.samples.append(Sample(at=100.0, counts={"published": 10, "dlq": 0}))
    history.samples.append(Sample(at=105.0, counts={"published": 60, "dlq": 5}))
    now = Sample(at=107.0, counts={"published": 80, "dlq": 5})

    points = history.rates(now)

    assert [at for at, _ in points] == [105.0, 107.0]
    assert points[0][1]["published"] == 10.0
    assert points[0][1]["dlq"] == 1.0
    assert points[1][1]["published"] == 10.0
    assert points[1][1]["dlq"] == 0.0


def test_a_counter_that_went_back_counts_as_zero_not_negative() -> None:
    # A restarted single-worker service starts its counts again.
    history = ServiceHistory(_never, interval=5, span=60)
    history.samples.append(Sample(at=0.0, counts={"published": 100}))
    assert history.rates(Sample(at=5.0, counts={"published": 3}))[0][1]["published"] == 0.0


def test_only_the_span_is_kept() -> None:
    history = ServiceHistory(_never, interval=5, span=60)
    for n in range(100):
        history.samples.append(Sample(at=float(n * 5), counts={}))
    assert len(history.samples) == 13
    assert history.samples[0].at == 435.0


def test_quantiles_interpolate_within_buckets_as_prometheus_does() -> None:
    buckets = {0.005: 50.0, 0.01: 90.0, 0.05: 99.0, 0.1: 100.0, math.inf: 100.0}
    assert quantile(buckets, 0.5) == pytest.approx(0.005)
    assert quantile(buckets, 0.7) == pytest.approx(0.0075)
    assert quantile(buckets, 0.99) == pytest.approx(0.05)
    assert quantile({}, 0.5) is None
    assert quantile({0.1: 0.0, math.inf: 0.0}, 0.5) is None
    assert quantile({0.1: 0.0, math.inf: 4.0}, 0.5) == 0.1  # beyond the last bound: that bound


def test_latency_counts_only_requests_since_the_oldest_kept_sample() -> None:
    history = ServiceHistory(_never, interval=5, span=60)
    history.samples.append(Sample(at=0.0, counts={}, latency_buckets={0.01: 1000.0, 1.0: 1000.0}))
    latest = Sample(at=60.0, counts={}, latency_buckets={0.01: 1000.0, 1.0: 1100.0})
    p50, p99 = history.latency(latest)
    assert p50 is not None
    assert p99 is not None
    assert 0.01 < p50 < p99 <= 1.0  # the old fast requests are not in the window


def test_counts_of_a_publisher_metrics_body() -> None:
    body = {
        "events_published": 7,
        "records_spooled": 2,
        "events_dlq": 1,
        "events_rejected": {"queue_full": 3, "invalid": 4},
        "events_duplicate": 5,
    }
    assert counts_of(body) == {"published": 7, "spooled": 2, "dlq": 1, "rejected": 7, "duplicate": 5}


def test_the_chart_is_svg_with_a_line_per_series_and_nothing_from_the_data_unescaped() -> None:
    points = [(1000.0 + n * 5, {"published": float(n), "dlq": 0.0}) for n in range(10)]
    svg = str(line_chart(points))
    assert svg.startswith("<svg")
    assert svg.count("<polyline") == 6  # a series missing from the points is drawn at zero
    assert 'data-series="published"' in svg
    assert "<script" not in svg
    assert str(line_chart([])).startswith("<svg")
