"""Every open, click and bounce counts; a bounded number is kept.

Each event is added to its message's counters (opens, clicks and how many of each look
automated, bounces), but a message keeps only its first TRACKING_EVENTS_KEPT_FIRST and its
most recent TRACKING_EVENTS_KEPT_LAST events as rows (100 and 100 by default). A pixel
fetched thousands of times (a stranger's loop, a broken image proxy) so costs a counter
update per batch and at most FIRST + LAST rows, and the message's detail and page stay small.

Counters are exact under concurrent writers: each is incremented in the database (`F()` in
an UPDATE), never read and written back. A batch first locks its messages' rows, in one
order for every writer so two batches cannot deadlock, and reads their counts: batches of
one message (from several web processes, or a bounce) then take turns, so which events are
kept is decided from exact counts, and a message that would hold more rows than the bound is
trimmed back to its first and most recent ones after the insert.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

from django.conf import settings
from django.db import connection, transaction
from django.db.models import F

from tracking.models import Message, TrackingEvent

EVENT_COLUMNS = (
    "message_id",
    "kind",
    "occurred_at",
    "ip",
    "user_agent",
    "url",
    "automated",
    "automated_reason",
    "source",
)


@dataclass(frozen=True)
class Tally:
    """What a batch adds to one message's counters."""

    opens: int = 0
    opens_automated: int = 0
    clicks: int = 0
    clicks_automated: int = 0
    bounces: int = 0

    def add(self, event: TrackingEvent) -> Tally:
        opens, clicks = (
            event.kind == TrackingEvent.Kind.OPEN,
            event.kind == TrackingEvent.Kind.CLICK,
        )
        return Tally(
            opens=self.opens + opens,
            opens_automated=self.opens_automated + (opens and event.automated),
            clicks=self.clicks + clicks,
            clicks_automated=self.clicks_automated + (clicks and event.automated),
            bounces=self.bounces + (event.kind == TrackingEvent.Kind.BOUNCE),
        )

    def increments(self) -> dict[str, F]:
        counts = {
            "open_count": self.opens,
            "open_automated_count": self.opens_automated,
            "click_count": self.clicks,
            "click_automated_count": self.clicks_automated,
            "bounce_count": self.bounces,
        }
        return {column: F(column) + n for column, n in counts.items() if n}

    @property
    def total(self) -> int:
        return self.opens + self.clicks + self.bounces


@transaction.atomic(savepoint=False)
def events_store(*, events: list[TrackingEvent]) -> int:
    """Count `events` on their messages and keep those the bound allows. Returns how many
    were counted."""
    tallies: dict[int, Tally] = defaultdict(Tally)
    for event in events:
        tallies[event.message_id] = tallies[event.message_id].add(event)
    counted_before = _lock_and_count(list(tallies))
    _insert(events_worth_keeping(events, counted_before))
    messages_count(tallies)
    bound = settings.TRACKING_EVENTS_KEPT_FIRST + settings.TRACKING_EVENTS_KEPT_LAST
    events_trim(
        message_pks=[
            pk for pk, tally in tallies.items() if counted_before[pk] + tally.total > bound
        ]
    )
    return len(events)


def _lock_and_count(pks: list[int]) -> dict[int, int]:
    """Lock the messages' rows (in pk order) and read how many events each has counted."""
    locked = Message.objects.filter(pk__in=pks).order_by("pk").select_for_update()
    total = F("open_count") + F("click_count") + F("bounce_count")
    return dict(locked.values_list("pk", total))


def events_worth_keeping(
    events: list[TrackingEvent], counted_before: dict[int, int]
) -> list[TrackingEvent]:
    """Of a batch's events, per message: those that are still among its first FIRST, and the
    most recent LAST of the others (the older of those would be trimmed at once)."""
    first, last = settings.TRACKING_EVENTS_KEPT_FIRST, settings.TRACKING_EVENTS_KEPT_LAST
    by_message: dict[int, list[TrackingEvent]] = defaultdict(list)
    for event in events:
        by_message[event.message_id].append(event)
    kept: list[TrackingEvent] = []
    for pk, batch in by_message.items():
        batch.sort(key=lambda event: event.occurred_at)
        room = max(0, first - counted_before[pk])
        kept += batch[:room]
        if last:
            kept += batch[room:][-last:]
    return kept


def messages_count(tallies: dict[int, Tally]) -> None:
    """Add each message's tally to its counters: one UPDATE per distinct tally (in a batch,
    most messages add the same one, a single open), each incrementing in the database."""
    by_tally: dict[Tally, list[int]] = defaultdict(list)
    for pk, tally in tallies.items():
        by_tally[tally].append(pk)
    for tally, pks in by_tally.items():
        Message.objects.filter(pk__in=sorted(pks)).update(**tally.increments())


def events_trim(*, message_pks: list[int]) -> int:
    """Delete the events of these messages beyond their first FIRST and most recent LAST.
    Returns how many were deleted."""
    first, last = settings.TRACKING_EVENTS_KEPT_FIRST, settings.TRACKING_EVENTS_KEPT_LAST
    deleted = 0
    for pk in sorted(message_pks):
        events = TrackingEvent.objects.filter(message_id=pk)
        surplus = events
        if first:
            surplus = surplus.exclude(
                pk__in=events.order_by("occurred_at", "pk").values("pk")[:first]
            )
        if last:
            recent = events.order_by("-occurred_at", "-pk").values("pk")[:last]
            surplus = surplus.exclude(pk__in=recent)
        deleted += surplus.delete()[0]
    return deleted


def _insert(events: list[TrackingEvent]) -> None:
    """One multi-row INSERT; on PostgreSQL a COPY, which costs a third of it per row."""
    if not events:
        return
    if connection.vendor != "postgresql":
        TrackingEvent.objects.bulk_create(events)
        return
    table = connection.ops.quote_name(TrackingEvent._meta.db_table)
    with connection.cursor() as cursor:
        with cursor.copy(f"COPY {table} ({', '.join(EVENT_COLUMNS)}) FROM STDIN") as copy:
            for event in events:
                copy.write_row([getattr(event, column) for column in EVENT_COLUMNS])
