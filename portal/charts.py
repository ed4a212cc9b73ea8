"""Emails per day by status, as the geometry of an inline SVG of stacked bars.

Drawn on the server: no JavaScript library, nothing fetched, and it prints. The template
only places the rectangles this module measures."""

from __future__ import annotations

from dataclasses import dataclass

from tracking.models import Disposition
from tracking.reports import DayCounts

# Bottom to top: delivered first, then what is still moving, then the failures.
STACK_ORDER = [
    Disposition.SENT,
    Disposition.RECEIVED_BOUNCED,
    Disposition.RECEIVED,
    Disposition.QUEUED,
    Disposition.UNDELIVERABLE,
    Disposition.NO_MX_RECORD,
    Disposition.EXPIRED,
    Disposition.NO_RULES,
    Disposition.RULE_ERROR,
]

WIDTH, HEIGHT = 960, 240
LEFT, RIGHT, TOP, BOTTOM = 40, 10, 12, 28


@dataclass(frozen=True)
class Segment:
    x: float
    y: float
    width: float
    height: float
    disposition: str
    label: str
    count: int


@dataclass(frozen=True)
class Bar:
    day_label: str
    total: int
    x: float
    width: float
    segments: list[Segment]


@dataclass(frozen=True)
class Tick:
    y: float
    value: int


@dataclass(frozen=True)
class XLabel:
    x: float
    text: str


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    bars: list[Bar]
    ticks: list[Tick]
    x_labels: list[XLabel]
    legend: list[tuple[str, str]]
    baseline: float
    left: int
    right_edge: int
    empty: bool


def nice_ceiling(value: int) -> int:
    """The smallest of 1, 2, 5, 10, 20, 50, ... that is at least `value` (at least 1)."""
    step = 1
    while True:
        for factor in (1, 2, 5):
            if step * factor >= value:
                return step * factor
        step *= 10


def stacked_bars(days: list[DayCounts]) -> Chart:
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    top_value = nice_ceiling(max((d.total for d in days), default=0))
    slot = plot_w / max(len(days), 1)
    bar_w = max(slot * 0.72, 1.0)
    labels = dict(Disposition.choices)
    bars = []
    for index, day in enumerate(days):
        x = LEFT + index * slot + (slot - bar_w) / 2
        y = TOP + plot_h
        segments = []
        for disposition in STACK_ORDER:
            count = day.counts.get(disposition, 0)
            if not count:
                continue
            height = plot_h * count / top_value
            y -= height
            segments.append(
                Segment(
                    x,
                    round(y, 2),
                    round(bar_w, 2),
                    round(height, 2),
                    disposition,
                    labels[disposition],
                    count,
                )
            )
        bars.append(
            Bar(f"{day.day:%a %d %b %Y}", day.total, round(x, 2), round(bar_w, 2), segments)
        )
    ticks = [
        Tick(round(TOP + plot_h - plot_h * value / top_value, 2), value)
        for value in sorted({0, top_value // 2, top_value})
    ]
    every = max(1, round(len(days) / 8))
    x_labels = [
        XLabel(round(LEFT + i * slot + slot / 2, 2), f"{day.day:%d %b}")
        for i, day in enumerate(days)
        if i % every == 0
    ]
    present = {d for day in days for d in day.counts}
    legend = [(d.value, d.label) for d in STACK_ORDER if d in present]
    return Chart(
        WIDTH,
        HEIGHT,
        bars,
        ticks,
        x_labels,
        legend,
        TOP + plot_h,
        LEFT,
        WIDTH - RIGHT,
        empty=not present,
    )
