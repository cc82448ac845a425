"""Line charts drawn by the server as inline SVG (templates/charts.html draws a `Plot`): no script, no
style attributes (colours come from the `series-N` classes in console.css), a <title> per bucket for
tooltips, and the same figures as a table for screen readers and keyboards."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime

from dispatcher.activity import Chart

WIDTH, HEIGHT = 720, 220
LEFT, RIGHT, TOP, BOTTOM = 52, 12, 12, 34
X_TICKS = 6


def nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 times 10^k at or above `value` (at least 1): a round top for the y axis."""
    if value <= 1:
        return 1.0
    exponent = 10 ** math.floor(math.log10(value))
    return next(m * exponent for m in (1, 2, 2.5, 5, 10) if m * exponent >= value - 1e-9)


def rate(value: float) -> str:
    """A per-minute rate as people read it: whole numbers plain, small ones with up to two decimals."""
    if value == int(value):
        return f"{int(value):,}"
    return f"{value:,.2f}".rstrip("0").rstrip(".") if value < 10 else f"{value:,.1f}"


@dataclass
class Line:
    name: str
    css: str  # series-N: its colour
    points: str  # "x,y x,y ..." for <polyline points>
    total: int


@dataclass
class Plot:
    title: str
    summary: str  # what a screen reader hears instead of the picture
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    right: int = WIDTH - RIGHT
    top: int = TOP
    bottom: int = HEIGHT - BOTTOM
    lines: list[Line] = field(default_factory=list)
    y_ticks: list[tuple[float, str]] = field(default_factory=list)  # (y, label)
    x_ticks: list[tuple[float, str]] = field(default_factory=list)  # (x, label)
    columns: list[tuple[float, float, str]] = field(default_factory=list)  # (x, width, tooltip) per bucket
    rows: list[tuple[str, list[str]]] = field(default_factory=list)  # the table: (bucket, rate per line)


def _time_label(at: datetime, span_minutes: int) -> str:
    return at.strftime("%d %b %H:%M") if span_minutes > 24 * 60 else at.strftime("%H:%M")


def plot(chart: Chart, title: str, unit: str, css: dict[str, str] | None = None) -> Plot:
    """`unit`: what is counted ("events", "deliveries"); the axis reads per minute whatever the buckets.
    `css`: a series' own class by name (else series-N, in order)."""
    n = len(chart.buckets)
    top = nice_ceiling(chart.peak)
    result = Plot(title=title, summary="")
    inner_w, inner_h = result.right - result.left, result.bottom - result.top
    step = inner_w / max(n, 1)

    def x(i: int) -> float:
        return round(result.left + step * (i + 0.5), 1)

    def y(v: float) -> float:
        return round(result.bottom - inner_h * v / top, 1)

    span = n * chart.minutes
    for s_index, series in enumerate(chart.series):
        points = " ".join(f"{x(i)},{y(r)}" for i, r in enumerate(series.rates))
        line_css = (css or {}).get(series.name, f"series-{s_index % 7}")
        result.lines.append(Line(series.name, line_css, points, series.total))
    result.y_ticks = [(y(top * k / 4), rate(top * k / 4)) for k in range(5)]
    result.x_ticks = [(x(i), _time_label(chart.buckets[i], span)) for i in range(0, n, max(n // X_TICKS, 1)) if i < n]
    for i, at in enumerate(chart.buckets):
        values = [rate(s.rates[i]) for s in chart.series]
        parts = ", ".join(f"{s.name} {v}/min" for s, v in zip(chart.series, values, strict=True))
        result.columns.append((round(result.left + step * i, 1), round(step, 2), f"{_time_label(at, span)}: {parts}"))
        if any(s.counts[i] for s in chart.series):
            result.rows.append((_time_label(at, span), values))
    total = sum(s.total for s in chart.series)
    if total:
        peak_i = max(range(n), key=lambda i: sum(s.rates[i] for s in chart.series))
        result.summary = (
            f"{total:,} {unit} in all ("
            + ", ".join(f"{s.name} {s.total:,}" for s in chart.series)
            + f"); the busiest {'minute' if chart.minutes == 1 else f'{chart.minutes} minutes'} began at "
            f"{_time_label(chart.buckets[peak_i], span)} UTC with "
            f"{rate(sum(s.rates[peak_i] for s in chart.series))} {unit} per minute."
        )
    else:
        result.summary = f"No {unit} in this window."
    return result
