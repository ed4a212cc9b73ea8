"""Storing what inbound SMTP accepted, before it answers 250."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from conversations.inbound.admission import Admission, inbound_admit
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
    # What the sender's authentication decided (inbound_admit); None: not checked.
    admission: Admission | None = None


@dataclass
class Receipts:
    """What storing a group of arrivals came to."""

    # Per arrival: its stored row, or the SMTP reply refusing it (a limit was reached).
    outcomes: list[InboundMessage | str]
    # The limits' totals after the store, each key's (window start, amount): see RecentUsage.
    usage: dict[str, tuple[int, int]]


def inbound_receive(
    *, raw: bytes, recipients: list[str], envelope: Envelope
) -> InboundMessage | str:
    """The one way raw inbound mail enters routing, whatever brought it (our SMTP server, an
    ESP's inbound webhook): the sender authenticated (inbound_admit: a DMARC `reject` failure
    is stored refused, a DNS failure is not stored at all), then the message stored for the
    routing loop. Returns the stored row, or the SMTP reply that refuses or defers it
    ("550 5.7.1 ...", "451 4.7.0 ...", a limit's reply). `recipients` are addresses of ours
    (recipient_resolve); the SMTP server does the same in two steps, the authentication in
    its own thread pool and the store grouped with other sessions' (smtp.py)."""
    admission = inbound_admit(raw=raw, envelope=envelope)
    if admission.deferred:
        return admission.reply
    [outcome] = inbound_receive_many([Arrival(envelope, recipients, raw, admission)]).outcomes
    if admission.refused and not isinstance(outcome, str):
        return admission.reply
    return outcome


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
    refusal = loop_reason(raw)
    authentication = {}
    if admission := arrival.admission:
        refusal = refusal or (admission.reply if admission.refused else "")
        verdict = admission.verdict
        authentication = {
            "spf": verdict.spf,
            "dkim": verdict.dkim,
            "dmarc": verdict.dmarc,
            "authentication_results": text_safe(verdict.authentication_results),
            "authentication": _json_safe(verdict.as_json()),
            "quarantined": admission.quarantined,
        }
    return InboundMessage(
        peer=envelope.peer[:100],
        helo=text_safe(envelope.helo)[:255],  # for SPF of a null sender
        mail_from=text_safe(envelope.mail_from)[:998],
        rcpt_to=arrival.recipients,
        raw=raw,
        status=InboundMessage.Status.REFUSED if refusal else InboundMessage.Status.PENDING,
        error=refusal,
        **authentication,
    )


def _json_safe(value):
    """PostgreSQL's jsonb refuses NUL in text, as its text columns do."""
    if isinstance(value, str):
        return text_safe(value)
    if isinstance(value, dict):
        return {key: _json_safe(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_json_safe(item) for item in value]
    return value


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
