from __future__ import annotations

from datetime import date

import pytest

from portal.charts import HEIGHT, TOP, nice_ceiling, stacked_bars
from tracking.reports import DayCounts


@pytest.mark.parametrize(
    ("value", "ceiling"), [(0, 1), (1, 1), (3, 5), (7, 10), (11, 20), (120, 200), (501, 1000)]
)
def test_the_axis_top_is_a_round_number_at_least_the_busiest_day(value, ceiling):
    assert nice_ceiling(value) == ceiling


def test_segments_stack_from_the_baseline_in_proportion_to_their_counts():
    days = [
        DayCounts(date(2026, 3, 1), {"sent": 6, "undeliverable": 2}),
        DayCounts(date(2026, 3, 2), {}),
        DayCounts(date(2026, 3, 3), {"queued": 10}),
    ]

    chart = stacked_bars(days)

    sent, failed = chart.bars[0].segments
    assert (sent.disposition, failed.disposition) == ("sent", "undeliverable")
    assert sent.y + sent.height == pytest.approx(chart.baseline)
    assert failed.y + failed.height == pytest.approx(sent.y)
    assert sent.height == pytest.approx(3 * failed.height)
    assert chart.bars[1].segments == []
    assert chart.bars[2].segments[0].y == pytest.approx(TOP)  # the busiest day fills the plot
    assert [t.value for t in chart.ticks] == [0, 5, 10]
    assert chart.legend == [
        ("sent", "Sent"),
        ("queued", "Queued"),
        ("undeliverable", "Undeliverable"),
    ]
    assert chart.height == HEIGHT and not chart.empty


def test_a_range_without_mail_is_an_empty_chart():
    assert stacked_bars([DayCounts(date(2026, 3, 1))]).empty
