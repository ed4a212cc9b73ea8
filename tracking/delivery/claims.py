"""Claiming messages for a delivery attempt, by conditional UPDATE.

A claim stamps a fresh `claim_token`, sets `locked_until` and counts the attempt, on rows still
due at UPDATE time only, so two workers never claim the same message for one attempt. The
attempt's outcome is written only while that claim still holds the message
(state.Transition.claimed). A claim leaves `state_version` alone: it is not a change of state.

The delivery loop renews the lock of every batch it has in flight (`claims_renew`); if the loop
dies, the locks lapse DELIVERY_LOCK_SECONDS later and the messages are claimed again.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q, prefetch_related_objects
from django.utils import timezone

from tracking.models import Disposition, Message

WAITING = [Disposition.RECEIVED, Disposition.QUEUED]  # the condition of msg_waiting_domain


def due_filter(now: datetime) -> Q:
    """Messages waiting for an attempt now, not held by a live claim."""
    due = Q(disposition=Disposition.RECEIVED) | Q(
        disposition=Disposition.QUEUED, next_attempt_at__lte=now
    )
    unlocked = Q(locked_until__isnull=True) | Q(locked_until__lte=now)
    return Q(disposition__in=WAITING) & due & unlocked


def next_due_domain(*, after: str = "") -> str | None:
    """The first recipient domain after `after`, in alphabetical order, with a message due
    now, wrapping round to the first: called with the domain it returned last time, it takes
    every domain with due mail in turn."""
    domains = (
        Message.objects.filter(due_filter(timezone.now()))
        .order_by("recipient_domain")
        .values_list("recipient_domain", flat=True)
    )
    return domains.filter(recipient_domain__gt=after).first() or (
        domains.first() if after else None
    )


def messages_claim(*, domain: str, limit: int | None = None) -> list[Message]:
    """Claim up to `limit` (DELIVERY_BATCH_SIZE) due messages to `domain`, oldest first, and
    return them, API mail with its attachments loaded (forwarded and relayed mail carries its
    own in `source_mime`)."""
    now = timezone.now()
    limit = limit or settings.DELIVERY_BATCH_SIZE
    token = uuid.uuid4()
    with transaction.atomic():
        # SKIP LOCKED (PostgreSQL): concurrent claims take different rows instead of queueing
        # behind each other. SQLite serialises writers and ignores it.
        due = Message.objects.filter(due_filter(now), recipient_domain=domain)
        pks = list(
            due.select_for_update(skip_locked=True)
            .order_by("pk")
            .values_list("pk", flat=True)[:limit]
        )
        if not pks:
            return []
        claimed = due.filter(pk__in=pks).update(
            claim_token=token,
            locked_until=now + timedelta(seconds=settings.DELIVERY_LOCK_SECONDS),
            attempt_count=F("attempt_count") + 1,
        )
    if not claimed:
        return []
    messages = list(Message.objects.filter(pk__in=pks, claim_token=token).order_by("pk"))
    # Not for all: Django's prefetch makes a queryset per message, a fifth of a claim's time.
    prefetch_related_objects([m for m in messages if m.source_mime is None], "attachments")
    return messages


def claims_renew(messages: Sequence[Message]) -> int:
    """Push back the lock of claimed messages whose attempt is still going on (those still
    held by their claim); how many were renewed."""
    if not messages:
        return 0
    locked_until = timezone.now() + timedelta(seconds=settings.DELIVERY_LOCK_SECONDS)
    return Message.objects.filter(
        pk__in=[m.pk for m in messages], claim_token__in={m.claim_token for m in messages}
    ).update(locked_until=locked_until)
