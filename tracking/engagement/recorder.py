"""The write path of opens and clicks: answer at once, write in batches.

Every round trip to the database a hit waits for costs throughput: a hit that waits for its
own committed INSERT, or even for one UPDATE, reaches only a third of a trivial view's rate
on a busy two-core machine. So a hit does no database work in its request. It is appended to
a buffer in the web process, written once its oldest hit has waited
TRACKING_EVENT_FLUSH_INTERVAL seconds (default 0.5), sooner when TRACKING_EVENT_BATCH hits are
waiting, and when the process exits (gunicorn's graceful stop and max-requests recycling,
Ctrl-C), in one transaction:

- one SELECT of the batch's messages (their delivery date and read status),
- one multi-row INSERT (a COPY on PostgreSQL) of the classified TrackingEvents
  (classification happens here, where the delivery date and the neighbouring clicks of each
  message are known) that a message still keeps, and an UPDATE of the messages' counters,
  which count them all (tracking/engagement/retention.py),
- a conditional UPDATE per still-unread message, sent together, that marks it read with the
  time of its first hit: `WHERE read_disposition = 'unread'`, so two writers racing never
  both set it.

Under traffic the batch is written by the request that finds it due, after its response has
gone out; when traffic stops, by a timer thread (tracking/buffering.py).

The trade-off, written down: the read status and the events show up to one interval late; a
web process killed outright (SIGKILL, OOM kill, power loss) loses the hits of its last
interval, at most TRACKING_EVENT_FLUSH_INTERVAL seconds of one process's traffic. A graceful
stop or restart loses nothing, and a database crash loses nothing (each batch is an ordinary
durable commit). When the database cannot be reached the batch is kept and retried, up to
TRACKING_EVENT_BUFFER_MAX hits per process (the oldest are dropped beyond that, with an error
in the log). When two processes hold first hits of one message, the one that commits first
sets `read_first_date`, which may be later than the other's by up to one interval.
TRACKING_EVENT_FLUSH_INTERVAL=0 writes each hit within its request instead (the tests do).
"""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction

from iovox_email.metrics import TRACKING_HITS
from tracking.buffering import AfterResponseBuffer
from tracking.dates import date_text
from tracking.engagement.classify import HitFacts, clicks_nearby, hit_classify
from tracking.engagement.retention import events_store
from tracking.events import EventDraft, events_emit
from tracking.models import EventType, Message, ReadDisposition, TrackingEvent

logger = logging.getLogger(__name__)

BURST_WINDOW = timedelta(seconds=1)
USER_AGENT_MAX = 1000


@dataclass(frozen=True)
class Hit:
    """One request to a pixel or a click URL, as it arrived."""

    kind: str  # TrackingEvent.Kind.OPEN or CLICK
    message_id: uuid.UUID
    occurred_at: datetime
    method: str
    ip: str | None
    user_agent: str
    url: str = ""
    source: str = "ours"  # or "esp": reported by the ESP's tracking webhook


def tracking_hit_record(*, hit: Hit) -> None:
    """Record a hit: into the batch of this process, or at once when batching is off."""
    if _buffer.enabled:
        _buffer.add(hit)
    else:
        tracking_events_write(hits=[hit])


def tracking_events_flush() -> int:
    """Write the hits buffered in this process; returns how many events were stored. A batch
    that fails with a DatabaseError (the database unreachable, a deadlock, a message deleted
    under the batch) is kept for the next try, which no longer finds a deleted message."""
    return _buffer.flush()


@transaction.atomic
def tracking_events_write(*, hits: list[Hit]) -> int:
    """Count hits as classified TrackingEvents on their messages, keep those the bound
    allows (one INSERT), mark the unread messages read (one conditional UPDATE), and emit
    their webhook events. Hits of messages that do not exist (any more) are dropped: an
    unknown or deleted message records nothing. Returns the number of events counted."""
    messages = {
        row[0]: _MessageFacts(*row[1:])
        for row in Message.objects.filter(message_id__in={h.message_id for h in hits}).values_list(
            "message_id", "pk", "delivery_date", "read_disposition", "account_id"
        )
    }
    hits = [h for h in hits if h.message_id in messages]
    clicks = _click_times(hits, messages)
    events = [_event(hit, messages[hit.message_id], clicks) for hit in hits]
    events_store(events=events)
    first_reads: dict[int, datetime] = {}
    for hit in hits:
        facts = messages[hit.message_id]
        if facts.read_disposition == ReadDisposition.UNREAD:
            first_reads[facts.pk] = min(hit.occurred_at, first_reads.get(facts.pk, hit.occurred_at))
    messages_mark_read(first_reads=first_reads)
    events_emit(
        _event_draft(event, messages[hit.message_id])
        for hit, event in zip(hits, events, strict=True)
    )
    transaction.on_commit(lambda: _count(events))  # a batch retried after a failure: once
    return len(events)


def _count(events: list[TrackingEvent]) -> None:
    for event in events:
        agent = "automated" if event.automated else "human"
        TRACKING_HITS.labels(kind=event.kind, agent=agent).inc()


def _event_draft(event: TrackingEvent, message: _MessageFacts) -> EventDraft:
    """The webhook event of a hit: `email.opened` or `email.clicked`, with the hit."""
    hit = {
        "occurred_date": date_text(event.occurred_at),
        "ip": event.ip,
        "user_agent": event.user_agent,
        "url": event.url,
        "automated": event.automated,
        "automated_reason": event.automated_reason,
    }
    kind = EventType.OPENED if event.kind == TrackingEvent.Kind.OPEN else EventType.CLICKED
    return EventDraft(
        message.account_id,
        kind,
        message.pk,
        {"event": {k: v for k, v in hit.items() if v not in (None, "")}},
    )


def messages_mark_read(*, first_reads: dict[int, datetime]) -> int:
    """Set `read` and `read_first_date` on the messages (pk: time of their first hit) that are
    still unread, in one conditional UPDATE: of two writers racing for a message, the one
    that commits second finds it read and changes nothing. Returns how many became read.

    Raw SQL because the ORM can only give each row its own date with a CASE of one branch per
    message, which the database evaluates in quadratic time: PostgreSQL joins a VALUES list
    instead; SQLite, in-process, runs one short UPDATE per message.
    """
    if not first_reads:
        return 0
    table = connection.ops.quote_name(Message._meta.db_table)
    rows = sorted(first_reads.items())  # one lock order for every writer
    read, unread = ReadDisposition.READ.value, ReadDisposition.UNREAD.value
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            values = ", ".join(["(%s::bigint, %s::timestamptz)"] * len(rows))
            cursor.execute(
                f"UPDATE {table} AS m SET read_disposition = %s, read_first_date = v.at "
                f"FROM (VALUES {values}) AS v(id, at) "
                "WHERE m.id = v.id AND m.read_disposition = %s",
                [read, *(value for row in rows for value in row), unread],
            )
        else:
            cursor.executemany(
                f"UPDATE {table} SET read_disposition = %s, read_first_date = %s "
                "WHERE id = %s AND read_disposition = %s",
                [
                    (read, connection.ops.adapt_datetimefield_value(at), pk, unread)
                    for pk, at in rows
                ],
            )
        return cursor.rowcount


@dataclass(frozen=True)
class _MessageFacts:
    pk: int
    delivery_date: datetime | None
    read_disposition: str
    account_id: int


def _event(hit: Hit, message: _MessageFacts, clicks: dict[int, list[datetime]]) -> TrackingEvent:
    nearby = 0
    if hit.kind == TrackingEvent.Kind.CLICK:
        # The hit itself is among its message's clicks; do not count it.
        nearby = clicks_nearby(clicks[message.pk], hit.occurred_at, BURST_WINDOW) - 1
    verdict = hit_classify(
        HitFacts(
            kind=hit.kind,
            method=hit.method,
            user_agent=hit.user_agent,
            ip=hit.ip,
            occurred_at=hit.occurred_at,
            delivery_date=message.delivery_date,
            clicks_nearby=nearby,
        )
    )
    return TrackingEvent(
        message_id=message.pk,
        kind=hit.kind,
        occurred_at=hit.occurred_at,
        ip=hit.ip,
        user_agent=hit.user_agent[:USER_AGENT_MAX],
        url=hit.url,
        automated=verdict.automated,
        automated_reason=verdict.reason,
        source=hit.source,
    )


def _click_times(
    hits: list[Hit], messages: dict[uuid.UUID, _MessageFacts]
) -> dict[int, list[datetime]]:
    """Click times per message pk: this batch's clicks and the stored ones just before it."""
    times: dict[int, list[datetime]] = defaultdict(list)
    batch_clicks = [h for h in hits if h.kind == TrackingEvent.Kind.CLICK]
    if not batch_clicks:
        return times
    for hit in batch_clicks:
        times[messages[hit.message_id].pk].append(hit.occurred_at)
    since = min(h.occurred_at for h in batch_clicks) - BURST_WINDOW
    stored = TrackingEvent.objects.filter(
        message_id__in=list(times), kind=TrackingEvent.Kind.CLICK, occurred_at__gte=since
    ).values_list("message_id", "occurred_at")
    for pk, occurred_at in stored:
        times[pk].append(occurred_at)
    return times


_buffer: AfterResponseBuffer[Hit] = AfterResponseBuffer(
    name="tracking-events",
    handle=lambda hits: tracking_events_write(hits=hits),
    interval=lambda: settings.TRACKING_EVENT_FLUSH_INTERVAL,
    batch=lambda: settings.TRACKING_EVENT_BATCH,
    limit=lambda: settings.TRACKING_EVENT_BUFFER_MAX,
)
