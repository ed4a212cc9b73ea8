"""What the message detail shows of a message's opens, clicks and bounces: its counters, which
count every one, and the events it kept (its first and most recent, see retention.py), a
page at a time."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from tracking.dates import date_text
from tracking.models import Message, TrackingEvent

# Events per page of the API's message detail, by default and at most.
EVENTS_LIMIT = 100
EVENTS_MAX_LIMIT = 1000


# The message's counters, which message_event_counts reads.
COUNTER_FIELDS = (
    "open_count",
    "open_automated_count",
    "click_count",
    "click_automated_count",
    "bounce_count",
)


def message_event_counts(message: Message) -> dict[str, int]:
    """Every open, click and bounce ever recorded, people's and machines' apart, and how
    many of them are kept as events."""
    return {
        "opens": message.open_count,
        "opens_human": message.open_count - message.open_automated_count,
        "opens_automated": message.open_automated_count,
        "clicks": message.click_count,
        "clicks_human": message.click_count - message.click_automated_count,
        "clicks_automated": message.click_automated_count,
        "bounces": message.bounce_count,
    }


@dataclass(frozen=True)
class EventPage:
    """One page of a message's kept events, oldest first, and where it stands among them."""

    events: list[TrackingEvent]
    current_page: int
    total_pages: int
    total_results: int


def message_events_page(message: Message, *, page: int, limit: int) -> EventPage:
    """Page `page` (from 1) of `limit` events; past the last page, an empty one. A page that
    is not full is the last, so it tells the total without a COUNT (as the search does)."""
    kept = message.events.all()
    offset = (page - 1) * limit
    events = list(kept[offset : offset + limit])
    if len(events) < limit and (events or offset == 0):
        total = offset + len(events)
    else:
        total = kept.count()
    return EventPage(
        events=events,
        current_page=page,
        total_pages=math.ceil(total / limit),
        total_results=total,
    )


def event_fields(event: TrackingEvent) -> dict[str, Any]:
    """An event as the API shows it, with its human/automated classification. Empty fields are
    left out, like the spec's search results do (a human open has no `automated_reason`, an
    open no `url`)."""
    return {
        name: value
        for name, value in {
            "kind": event.kind,
            "occurred_at": date_text(event.occurred_at),
            "ip": event.ip,
            "user_agent": event.user_agent,
            "url": event.url,
            "automated": event.automated,
            "automated_reason": event.automated_reason,
        }.items()
        if value not in (None, "")
    }
