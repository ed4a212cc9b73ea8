"""The write path of opens and clicks: read status at once, events in batches.

A hit does two things. It marks its message read the first time (the spec's read
disposition): one conditional UPDATE, `WHERE read_disposition = 'unread'`, in the request, so
two hits racing never both win and a committed 200 means the read status is stored. A cheap
per-process memory of messages already settled (read, or unknown) skips even that UPDATE for
the next hits of the same message.

And it records a TrackingEvent. Waiting for a committed INSERT per hit costs about two thirds
of the throughput, so events are buffered in the web process and written in batches (one
multi-row INSERT) by a background thread every TRACKING_EVENT_FLUSH_INTERVAL seconds
(default 0.5), or sooner when TRACKING_EVENT_BATCH hits are waiting, and when the process
exits (gunicorn's graceful stop, max-requests recycling, Ctrl-C). Classification happens at
that moment, when the batch knows the delivery date and the neighbouring clicks of each
message. The trade-off: a web process killed outright (SIGKILL, OOM, power loss) loses the
events of its last interval — never a read status, which is already committed. If the
database is unreachable the batch is kept and retried, up to TRACKING_EVENT_BUFFER_MAX events
per process (the oldest are dropped beyond that, with an error in the log).
TRACKING_EVENT_FLUSH_INTERVAL=0 writes each event within its request instead.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import uuid
from collections import OrderedDict, defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection

from tracking.engagement.classify import HitFacts, clicks_nearby, hit_classify
from tracking.models import Message, ReadDisposition, TrackingEvent

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


def tracking_hit_record(*, hit: Hit) -> None:
    """Mark the hit's message read if it was not, and record the event (see module doc)."""
    message_mark_read(message_id=hit.message_id, at=hit.occurred_at)
    if settings.TRACKING_EVENT_FLUSH_INTERVAL > 0:
        _buffer.add(hit)
    else:
        tracking_events_write(hits=[hit])


def message_mark_read(*, message_id: uuid.UUID, at: datetime) -> bool:
    """Set `read` and `read_first_date` unless the message is read already (or unknown).

    One conditional UPDATE, so concurrent first hits cannot both set the date. Returns
    whether this call was the first read.
    """
    if _settled.seen(message_id):
        return False
    first = bool(
        Message.objects.filter(
            message_id=message_id, read_disposition=ReadDisposition.UNREAD
        ).update(read_disposition=ReadDisposition.READ, read_first_date=at)
    )
    _settled.add(message_id)
    return first


def tracking_events_flush() -> int:
    """Write the hits buffered in this process; returns how many events were stored."""
    hits = _buffer.take()
    if not hits:
        return 0
    try:
        return tracking_events_write(hits=hits)
    except Exception:
        _buffer.put_back(hits)
        raise


def tracking_events_write(*, hits: list[Hit]) -> int:
    """Classify hits and store them as TrackingEvents in one INSERT. Hits of messages that no
    longer exist are dropped: a deleted message records nothing."""
    messages = {
        message_id: (pk, delivery_date)
        for message_id, pk, delivery_date in Message.objects.filter(
            message_id__in={h.message_id for h in hits}
        ).values_list("message_id", "pk", "delivery_date")
    }
    hits = [h for h in hits if h.message_id in messages]
    clicks = _click_times(hits, messages)
    events = []
    for hit in hits:
        pk, delivery_date = messages[hit.message_id]
        nearby = 0
        if hit.kind == TrackingEvent.Kind.CLICK:
            # The hit itself is among its message's clicks; do not count it.
            nearby = clicks_nearby(clicks[pk], hit.occurred_at, BURST_WINDOW) - 1
        verdict = hit_classify(
            HitFacts(
                kind=hit.kind,
                method=hit.method,
                user_agent=hit.user_agent,
                ip=hit.ip,
                occurred_at=hit.occurred_at,
                delivery_date=delivery_date,
                clicks_nearby=nearby,
            )
        )
        events.append(
            TrackingEvent(
                message_id=pk,
                kind=hit.kind,
                occurred_at=hit.occurred_at,
                ip=hit.ip,
                user_agent=hit.user_agent[:USER_AGENT_MAX],
                url=hit.url,
                automated=verdict.automated,
                automated_reason=verdict.reason,
            )
        )
    TrackingEvent.objects.bulk_create(events)
    return len(events)


def _click_times(
    hits: list[Hit], messages: dict[uuid.UUID, tuple[int, datetime | None]]
) -> dict[int, list[datetime]]:
    """Click times per message pk: this batch's clicks and the stored ones just before it."""
    times: dict[int, list[datetime]] = defaultdict(list)
    batch_clicks = [h for h in hits if h.kind == TrackingEvent.Kind.CLICK]
    if not batch_clicks:
        return times
    for hit in batch_clicks:
        times[messages[hit.message_id][0]].append(hit.occurred_at)
    since = min(h.occurred_at for h in batch_clicks) - BURST_WINDOW
    stored = TrackingEvent.objects.filter(
        message_id__in=list(times), kind=TrackingEvent.Kind.CLICK, occurred_at__gte=since
    ).values_list("message_id", "occurred_at")
    for pk, occurred_at in stored:
        times[pk].append(occurred_at)
    return times


class _SettledMessages:
    """Message ids known to need no read UPDATE (already read, or unknown), per process,
    bounded. Losing it costs one UPDATE that changes nothing."""

    def __init__(self, size: int = 100_000) -> None:
        self._ids: OrderedDict[uuid.UUID, None] = OrderedDict()
        self._size = size
        self._lock = threading.Lock()

    def seen(self, message_id: uuid.UUID) -> bool:
        return message_id in self._ids

    def add(self, message_id: uuid.UUID) -> None:
        with self._lock:
            self._ids[message_id] = None
            if len(self._ids) > self._size:
                self._ids.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._ids.clear()


class _EventBuffer:
    """Hits waiting for the next batch, and the thread that writes them.

    The thread starts with the first hit of a process (after gunicorn forks its workers), and
    an exit hook writes what is left when the process stops.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._hits: list[Hit] = []
        self._wake = threading.Event()
        self._pid: int | None = None

    def add(self, hit: Hit) -> None:
        with self._lock:
            if self._pid != os.getpid():
                self._start()
            self._hits.append(hit)
            self._trim()
            full = len(self._hits) >= settings.TRACKING_EVENT_BATCH
        if full:
            self._wake.set()

    def take(self) -> list[Hit]:
        with self._lock:
            hits, self._hits = self._hits, []
        return hits

    def put_back(self, hits: list[Hit]) -> None:
        with self._lock:
            self._hits[:0] = hits
            self._trim()

    def pending(self) -> int:
        return len(self._hits)

    def _trim(self) -> None:
        excess = len(self._hits) - settings.TRACKING_EVENT_BUFFER_MAX
        if excess > 0:
            del self._hits[:excess]
            logger.error("tracking event buffer full: dropped the %d oldest events", excess)

    def _start(self) -> None:
        # A new process (first use, or a fork that inherited a parent's buffer).
        self._pid = os.getpid()
        self._hits = []
        self._wake = threading.Event()
        threading.Thread(target=self._run, name="tracking-events", daemon=True).start()
        atexit.register(_flush_at_exit)

    def _run(self) -> None:
        while True:
            # 0 means "write within the request"; this thread then only idles.
            self._wake.wait(settings.TRACKING_EVENT_FLUSH_INTERVAL or 1.0)
            self._wake.clear()
            try:
                tracking_events_flush()
            except Exception:
                logger.exception("writing tracking events failed; they are kept for a retry")
            finally:
                # This thread's own connection: not kept open between batches, so it never
                # holds a connection slot (or a test database) while idle.
                connection.close()


def _flush_at_exit() -> None:
    try:
        tracking_events_flush()
    except Exception:
        logger.exception("tracking events could not be written at exit")


_buffer = _EventBuffer()
_settled = _SettledMessages()
