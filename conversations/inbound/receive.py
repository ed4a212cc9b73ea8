"""Storing what inbound SMTP accepted, before it answers 250."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from conversations.inbound.limits import Usage, client_of, usage_claim
from conversations.inbound.raw_mail import Envelope, loop_reason, received_header
from conversations.models import InboundMessage
from tracking.text import text_safe


@dataclass(frozen=True)
class Arrival:
    """A message as the SMTP conversation handed it over, to be stored."""

    envelope: Envelope
    recipients: list[str]
    raw: bytes


@dataclass
class Receipts:
    """What storing a group of arrivals came to."""

    # Per arrival: its stored row, or the SMTP reply refusing it (a limit was reached).
    outcomes: list[InboundMessage | str]
    # The limits' totals after the store, each key's (window start, amount): see RecentUsage.
    usage: dict[str, tuple[int, int]]


def inbound_receive_many(arrivals: Sequence[Arrival]) -> Receipts:
    """Store the messages that fit the limits (conversations/inbound/limits.py), in one
    transaction (one durable commit for all of them), each with our Received trace line on
    top, as `pending` or, when it is in a mail loop, as `refused` with the reason, so the SMTP
    server can refuse it. Only the header names are read here; the worker's routing loop reads
    the rest once it finds them (tracking/worker.py)."""
    usage = [
        Usage(client_of(arrival.envelope.peer), arrival.recipients, len(arrival.raw))
        for arrival in arrivals
    ]
    with transaction.atomic():
        refusals, totals = usage_claim(usage)
        outcomes = [
            refusal or _inbound_row(arrival)
            for arrival, refusal in zip(arrivals, refusals, strict=True)
        ]
        InboundMessage.objects.bulk_create([o for o in outcomes if not isinstance(o, str)])
    return Receipts(outcomes, totals)


def _inbound_row(arrival: Arrival) -> InboundMessage:
    envelope = arrival.envelope
    queue_id = secrets.token_hex(6)
    trace = received_header(envelope=envelope, recipients=arrival.recipients, queue_id=queue_id)
    raw = trace + arrival.raw
    loop = loop_reason(raw)
    return InboundMessage(
        peer=envelope.peer[:100],
        helo=text_safe(envelope.helo)[:255],  # for SPF of a null sender
        mail_from=text_safe(envelope.mail_from)[:998],
        rcpt_to=arrival.recipients,
        raw=raw,
        status=InboundMessage.Status.REFUSED if loop else InboundMessage.Status.PENDING,
        error=loop,
    )


def inbound_route_again(*, inbound_pks: list[int]) -> int:
    """Put failed and deferred messages back to `pending` now (after a fix, say), for the
    routing loop to find; how many were put back. A failed one gets the whole
    INBOUND_RETRY_SCHEDULE again. Routed and refused messages stay as they are."""
    return InboundMessage.objects.filter(
        pk__in=inbound_pks,
        status__in=[InboundMessage.Status.FAILED, InboundMessage.Status.DEFERRED],
    ).update(status=InboundMessage.Status.PENDING, error="", attempts=0, retry_at=None)


def inbound_retry_due() -> int:
    """Put deferred messages whose `retry_at` has come back to `pending`; how many. The
    routing loop calls it every turn, so a retry happens within a second of its time."""
    return InboundMessage.objects.filter(
        status=InboundMessage.Status.DEFERRED, retry_at__lte=timezone.now()
    ).update(status=InboundMessage.Status.PENDING, retry_at=None)


def inbound_messages_purge(*, batch: int = 1000, dry_run: bool = False) -> int:
    """Delete messages that are done with (routed, refused, or failed after their last
    attempt) and older than INBOUND_RETENTION_DAYS, a batch at a time; how many were
    deleted (with `dry_run`: how many there are). Pending and deferred ones stay: they are
    still to be routed."""
    cutoff = timezone.now() - timedelta(days=settings.INBOUND_RETENTION_DAYS)
    old = InboundMessage.objects.filter(
        status__in=[
            InboundMessage.Status.ROUTED,
            InboundMessage.Status.REFUSED,
            InboundMessage.Status.FAILED,
        ],
        received_at__lt=cutoff,
    )
    if dry_run:
        return old.count()
    deleted = 0
    for _ in range(100):  # bounded: what is left waits for the next run
        pks = list(old.order_by("received_at").values_list("pk", flat=True)[:batch])
        if not pks:
            break
        InboundMessage.objects.filter(pk__in=pks).delete()
        deleted += len(pks)
    return deleted
