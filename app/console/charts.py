"""A line chart drawn as SVG on the server: no charting script, nothing for the page's policy to allow."""

from __future__ import annotations

from datetime import UTC, datetime

from markupsafe import Markup, escape

COLORS = {
    "accepted": "#2c5282",
    "published": "#2b7a3d",
    "spooled": "#b7791f",
    "dlq": "#c53030",
    "rejected": "#6b46c1",
    "duplicate": "#718096",
}
WIDTH, HEIGHT, LEFT, BOTTOM, TOP = 720, 200, 48, 20, 8


def line_chart(points: list[tuple[float, dict[str, float]]], span_seconds: float = 900.0) -> Markup:
    """Events per second of each series over the last `span_seconds`, newest at the right."""
    end = points[-1][0] if points else datetime.now(UTC).timestamp()
    start = end - span_seconds
    shown = [(at, rates) for at, rates in points if at >= start]
    peak = max((value for _, rates in shown for value in rates.values()), default=0.0)
    top = _nice_ceiling(peak)
    plot_w, plot_h = WIDTH - LEFT - 4, HEIGHT - BOTTOM - TOP

    def x(at: float) -> float:
        return LEFT + (at - start) / span_seconds * plot_w

    def y(value: float) -> float:
        return TOP + plot_h - (value / top) * plot_h

    parts = [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="events per second, last {int(span_seconds // 60)} minutes">',
        f'<line x1="{LEFT}" y1="{TOP + plot_h}" x2="{WIDTH - 4}" y2="{TOP + plot_h}" class="axis"/>',
    ]
    for fraction in (0.0, 0.5, 1.0):
        level = top * fraction
        parts.append(
            f'<text x="{LEFT - 6}" y="{y(level) + 4:.1f}" class="tick" text-anchor="end">{_short(level)}</text>'
        )
        if fraction:
            parts.append(
                f'<line x1="{LEFT}" y1="{y(level):.1f}" x2="{WIDTH - 4}" y2="{y(level):.1f}" class="grid"/>'
            )
    for minutes in range(0, int(span_seconds // 60) + 1, 5):
        at = end - minutes * 60
        label, anchor = ("now", "end") if minutes == 0 else (f"-{minutes}m", "middle")
        parts.append(
            f'<text x="{x(at):.1f}" y="{HEIGHT - 4}" class="tick" text-anchor="{anchor}">{label}</text>'
        )
    for name, color in COLORS.items():
        coordinates = " ".join(f"{x(at):.1f},{y(rates.get(name, 0.0)):.1f}" for at, rates in shown)
        if coordinates:
            parts.append(
                f'<polyline points="{coordinates}" fill="none" stroke="{color}" stroke-width="2" '
                f'data-series="{escape(name)}"/>'
            )
    parts.append("</svg>")
    return Markup("".join(parts))


def _nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 5 times 10^n at or above `value` (at least 1)."""
    ceiling = 1.0
    while ceiling < value:
        for step in (2.0, 2.5, 2.0):  # 1 → 2 → 5 → 10 → ...
            ceiling *= step
            if ceiling >= value:
                break
    return ceiling


def _short(value: float) -> str:
    if value >= 1000:
        return f"{value / 1000:g}k"
    return f"{value:g}"
