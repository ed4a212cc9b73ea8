"""Retention of messages and what hangs off them (docs/operations.md).

- Content (MESSAGE_CONTENT_RETENTION_DAYS): a finished message's bodies, original MIME and
  attachments are deleted; its metadata (addresses, subject, outcome, counts) stays, with
  `content_purged_at` saying when, so the API and the portal can say "content no longer kept".
- Messages (MESSAGE_RETENTION_DAYS): the message itself, with its attempts and events.
- Tracking events (EVENT_RETENTION_DAYS): opens and clicks kept as rows; the message's
  counters keep counting them.

Each step works in batches of PURGE_BATCH_SIZE rows, each batch its own short transaction
that touches only old, finished rows, so it never waits on or holds up the delivery loop's
claims (which are on messages still waiting). The oldest rows are found by an index (content),
or as the oldest primary keys (messages and events are appended in time order: the purge
deletes the oldest prefix past the cutoff, and a row a little out of order waits for the next
run). A message still waiting for delivery is never touched.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Model, QuerySet
from django.utils import timezone

from tracking.delivery.claims import WAITING
from tracking.models import Attachment, Message, TrackingEvent


@dataclass(frozen=True)
class Cutoffs:
    """Rows older than these go."""

    content: datetime
    messages: datetime
    events: datetime

    @classmethod
    def at(cls, now: datetime) -> Cutoffs:
        return cls(
            content=now - timedelta(days=settings.MESSAGE_CONTENT_RETENTION_DAYS),
            messages=now - timedelta(days=settings.MESSAGE_RETENTION_DAYS),
            events=now - timedelta(days=settings.EVENT_RETENTION_DAYS),
        )


def message_contents_purge(*, before: datetime, batch: int, dry_run: bool = False) -> int:
    """Delete the content of up to `batch` finished messages received before `before`, the
    oldest first; how many (with `dry_run`: how many there are, deleting nothing)."""
    kept = Message.objects.filter(content_purged_at__isnull=True, receive_date__lt=before)
    kept = kept.exclude(disposition__in=WAITING)
    if dry_run:
        return kept.count()
    pks = list(kept.order_by("receive_date").values_list("pk", flat=True)[:batch])
    if not pks:
        return 0
    with transaction.atomic():
        Attachment.objects.filter(message_id__in=pks).delete()
        Message.objects.filter(pk__in=pks).exclude(disposition__in=WAITING).update(
            text_content="",
            html_content="",
            source_mime=None,
            content_purged_at=timezone.now(),
        )
    return len(pks)


def messages_purge(*, before: datetime, batch: int, dry_run: bool = False) -> int:
    """Delete up to `batch` of the oldest messages received before `before`, with their
    attempts, events and attachments; how many."""
    finished = Message.objects.exclude(disposition__in=WAITING)
    if dry_run:
        return finished.filter(receive_date__lt=before).count()
    pks = _oldest_prefix(finished, "receive_date", before, batch)
    if not pks:
        return 0
    with transaction.atomic():
        _, deleted = finished.filter(pk__in=pks).delete()
    return deleted.get(Message._meta.label, 0)


def tracking_events_purge(*, before: datetime, batch: int, dry_run: bool = False) -> int:
    """Delete up to `batch` of the oldest tracking events that occurred before `before`."""
    if dry_run:
        return TrackingEvent.objects.filter(occurred_at__lt=before).count()
    pks = _oldest_prefix(TrackingEvent.objects.all(), "occurred_at", before, batch)
    if pks:
        TrackingEvent.objects.filter(pk__in=pks).delete()
    return len(pks)


def _oldest_prefix(rows: QuerySet[Model], field: str, before: datetime, batch: int) -> list[int]:
    """The primary keys of the first `batch` rows in primary key order, up to the first one
    whose `field` is not before `before` (one index range read, however large the table)."""
    prefix = []
    for pk, at in rows.order_by("pk").values_list("pk", field)[:batch]:
        if at >= before:
            break
        prefix.append(pk)
    return prefix


# The steps of tracking's purge, in order: content before messages, so a message's content is
# never kept longer because the message goes later.
STEPS: dict[str, tuple[Callable[..., int], Callable[[Cutoffs], datetime]]] = {
    "message_contents": (message_contents_purge, lambda c: c.content),
    "messages": (messages_purge, lambda c: c.messages),
    "tracking_events": (tracking_events_purge, lambda c: c.events),
}
