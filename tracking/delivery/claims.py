"""Finding due messages, and claiming them for a delivery attempt by conditional UPDATE.

A message is due when it is `received`, or `queued` and its `next_attempt_at` has come, and
no live claim holds it. Each query reads one disposition
at a time, so both databases answer it from an index, in order: `msg_disp_domain` for the
domains in turn and a domain's oldest messages, `msg_disp_due` for what fell due last.

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
from django.db.models import F, Prefetch, Q, QuerySet, prefetch_related_objects
from django.utils import timezone

from tracking.delivery.compose import LOADED_ATTACHMENTS
from tracking.models import Disposition, Message

WAITING = (Disposition.RECEIVED, Disposition.QUEUED)  # new mail first, then retries


def unlocked(now: datetime) -> Q:
    return Q(locked_until__isnull=True) | Q(locked_until__lte=now)


def due(disposition: str, now: datetime) -> QuerySet[Message]:
    """Messages of one waiting disposition due for an attempt at `now`, not held by a live
    claim: every `received` one, the `queued` ones whose next attempt has come."""
    waiting = Message.objects.filter(unlocked(now), disposition=disposition)
    if disposition == Disposition.RECEIVED:
        return waiting  # nothing more for SQLite's planner to pick a worse index by
    return waiting.filter(next_attempt_at__lte=now)


def next_due_domain(*, after: str = "") -> str | None:
    """The first recipient domain after `after`, in alphabetical order, with a message due,
    wrapping round to the first: called with the domain it returned last time, it takes every
    domain with due mail in turn."""
    now = timezone.now()

    def first_after(after: str) -> str | None:
        firsts = (
            due(disposition, now)
            .filter(recipient_domain__gt=after)
            .order_by("recipient_domain")
            .values_list("recipient_domain", flat=True)
            .first()
            for disposition in WAITING
        )
        return min((domain for domain in firsts if domain is not None), default=None)

    return first_after(after) or (first_after("") if after else None)


def freshest_due_domain() -> str | None:
    """The recipient domain of the message that fell due last: the one accepted last, or a
    retry whose time has just come."""
    now = timezone.now()
    latest = (
        due(disposition, now)
        .filter(next_attempt_at__lte=now)
        .order_by("-next_attempt_at")
        .values_list("next_attempt_at", "recipient_domain")
        .first()
        for disposition in WAITING
    )
    return max((row for row in latest if row is not None), default=(None, None))[1]


def messages_claim(*, domain: str, limit: int | None = None) -> list[Message]:
    """Claim up to `limit` (DELIVERY_BATCH_SIZE) due messages to `domain`, new mail first,
    oldest first, and return them, API mail with its attachments loaded (into the attribute
    LOADED_ATTACHMENTS; forwarded and relayed mail carries its own in `source_mime`)."""
    now = timezone.now()
    limit = limit or settings.DELIVERY_BATCH_SIZE
    token = uuid.uuid4()
    with transaction.atomic():
        pks: list[int] = []
        for disposition in WAITING:
            # SKIP LOCKED (PostgreSQL): concurrent claims take different rows instead of
            # queueing behind each other. SQLite serialises writers and ignores it.
            pks += (
                due(disposition, now)
                .filter(recipient_domain=domain)
                .select_for_update(skip_locked=True)
                .order_by("pk")
                .values_list("pk", flat=True)[: limit - len(pks)]
            )
            if len(pks) >= limit:
                break
        if not pks:
            return []
        still_due = Message.objects.filter(
            Q(disposition=Disposition.RECEIVED)
            | Q(disposition=Disposition.QUEUED, next_attempt_at__lte=now),
            unlocked(now),
            pk__in=pks,
        )
        claimed = still_due.update(
            claim_token=token,
            locked_until=now + timedelta(seconds=settings.DELIVERY_LOCK_SECONDS),
            attempt_count=F("attempt_count") + 1,
        )
    if not claimed:
        return []
    messages = list(Message.objects.filter(pk__in=pks, claim_token=token).order_by("pk"))
    # Not for all, and into a list: Django's prefetch into `attachments` makes a queryset per
    # message, which took longer than the query itself.
    prefetch_related_objects(
        [m for m in messages if m.source_mime is None],
        Prefetch("attachments", to_attr=LOADED_ATTACHMENTS),
    )
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
