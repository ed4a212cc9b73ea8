"""Delivering claimed messages to the MX of their recipient domain, and the sweep that finds
messages whose task was lost or whose worker died.

Messages to one domain go as a batch over one SMTP connection per MX address (MAIL, RCPT, DATA
per message), tried by MX preference. Each reply decides that message: 2xx `sent`, 5xx
`undeliverable`; 4xx, timeouts and refused connections try the next MX and, if none accepts,
leave it `queued` for a later attempt on EMAIL_RETRY_SCHEDULE, or `expired` after EMAIL_EXPIRY.
Outcomes are written as each reply comes, so a worker dying mid-batch loses no result.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Count
from django.utils import timezone

from tracking.delivery.claims import due_filter, messages_claim
from tracking.delivery.mime import message_outgoing_bytes
from tracking.delivery.mx import MxOutcome, host_addresses, mx_lookup
from tracking.delivery.smtp import MxConnection, SmtpReply
from tracking.delivery.state import message_transition
from tracking.delivery.verp import verp_address
from tracking.models import DeliveryAttempt, Disposition, Message

log = logging.getLogger(__name__)

# The sweep leaves fresh `received` messages to the task enqueued when they were accepted.
SWEEP_GRACE = timedelta(seconds=60)
SWEEP_LIMIT = 5000


def messages_deliver(*, message_pk: int | None = None, domain: str | None = None) -> int:
    """Claim a batch of due messages to one domain (the domain of `message_pk`, that message
    first) and attempt delivery. Returns how many messages were attempted; 0 when there was
    nothing to do (already delivered, or held by another worker)."""
    if domain is None:
        domain = (
            Message.objects.filter(pk=message_pk).values_list("recipient_domain", flat=True).first()
        )
        if domain is None:
            return 0
    messages = messages_claim(domain=domain, first_pk=message_pk)
    if messages:
        batch_deliver(domain=domain, messages=messages)
    return len(messages)


def batch_deliver(*, domain: str, messages: list[Message]) -> None:
    lookup = mx_lookup(domain)
    if lookup.outcome is MxOutcome.NO_MX:
        for message in messages:
            _finish(message, Disposition.NO_MX_RECORD, SmtpReply(None, lookup.detail, ""))
        return
    if lookup.outcome is MxOutcome.TEMPORARY:
        for message in messages:
            _finish_temporary(message, SmtpReply(None, lookup.detail, ""))
        return

    pending = list(messages)
    failures: dict[int, SmtpReply] = {}
    for host in lookup.hosts:
        addresses = host_addresses(host)
        if not addresses:
            detail = "address lookup failed" if addresses is None else "has no A/AAAA record"
            for message in pending:
                failures[message.pk] = SmtpReply(None, f"{host} {detail}", host)
            continue
        for address in addresses:
            pending = _send_over_connection(host, address, pending, failures)
            if not pending:
                return
    for message in pending:
        reply = failures[message.pk]
        if reply.permanent:  # e.g. every MX greeted with 554
            _finish(message, Disposition.UNDELIVERABLE, reply)
        else:
            _finish_temporary(message, reply)


def _send_over_connection(
    host: str, address: str, pending: list[Message], failures: dict[int, SmtpReply]
) -> list[Message]:
    """Send what is pending over one connection; return what is left for the next MX."""
    left: list[Message] = []
    with MxConnection(host, address) as connection:
        refused = connection.open()
        if refused is not None:
            for message in pending:
                failures[message.pk] = refused
            # A 5xx greeting says this host serves no mail for us; other MX may still.
            return list(pending)
        for index, message in enumerate(pending):
            reply = connection.send(
                mail_from=verp_address(message),
                rcpt_to=message.recipient_address,
                data=message_outgoing_bytes(message),
            )
            if reply.accepted:
                _finish(message, Disposition.SENT, reply, delivery_date=timezone.now())
            elif reply.permanent:
                _finish(message, Disposition.UNDELIVERABLE, reply)
            else:
                failures[message.pk] = reply
                left.append(message)
            if not connection.alive:
                rest = pending[index + 1 :]
                for other in rest:
                    failures[other.pk] = reply
                return left + rest
    return left


def _finish(message: Message, to: str, reply: SmtpReply, **fields) -> None:
    with transaction.atomic():
        moved = message_transition(
            message=message, to=to, last_smtp_response=str(reply)[:2000], **fields
        )
        if not moved:
            log.warning("message %s changed during delivery; %s not recorded", message.pk, to)
            return
        DeliveryAttempt.objects.create(
            message=message,
            mx_host=reply.host,
            smtp_code=reply.code,
            smtp_text=reply.text[:2000],
            outcome=to,
        )


def _finish_temporary(message: Message, reply: SmtpReply) -> None:
    """A temporary failure: `queued` for the next attempt, or `expired` once EMAIL_EXPIRY has
    passed since the message was received."""
    now = timezone.now()
    deadline = message.receive_date + timedelta(seconds=settings.EMAIL_EXPIRY)
    if now >= deadline and message.disposition == Disposition.QUEUED:
        _finish(message, Disposition.EXPIRED, reply, status_detail=f"expired: {reply}"[:2000])
        return
    schedule = settings.EMAIL_RETRY_SCHEDULE or [60]
    delay = schedule[min(max(message.attempt_count, 1) - 1, len(schedule) - 1)]
    # The last retry happens at the deadline, so expiry is exact rather than up to one delay late.
    next_attempt_at = max(min(now + timedelta(seconds=delay), deadline), now)
    _finish(message, Disposition.QUEUED, reply, next_attempt_at=next_attempt_at)


def due_domains(*, now=None) -> dict[str, int]:
    """Recipient domains with messages due for an attempt, and how many."""
    now = now or timezone.now()
    due = Message.objects.filter(due_filter(now)).exclude(
        disposition=Disposition.RECEIVED, receive_date__gt=now - SWEEP_GRACE
    )
    pks = due.order_by("pk").values_list("pk", flat=True)[:SWEEP_LIMIT]
    rows = (
        Message.objects.filter(pk__in=list(pks))
        .values("recipient_domain")
        .annotate(count=Count("pk"))
        .order_by()
    )
    return {row["recipient_domain"]: row["count"] for row in rows}
