"""Delivering claimed messages to the MX of their recipient domain, and the sweep that finds
messages whose task was lost or whose worker died.

Messages to one domain go as a batch over one SMTP connection per MX address (MAIL, RCPT, DATA
per message), tried by MX preference. Each reply decides that message: 2xx `sent`, 5xx
`undeliverable`; 4xx, timeouts and refused connections try the next MX and, if none accepts,
leave it `queued` for a later attempt on EMAIL_RETRY_SCHEDULE, or `expired` after EMAIL_EXPIRY.
Outcomes are written a few at a time as the replies come (see Outcomes), so a worker dying
mid-batch loses at most those few results, and the sweep sends those messages again.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Count
from django.utils import timezone

from tracking.delivery.claims import due_filter, messages_claim
from tracking.delivery.durability import relax_commit_durability
from tracking.delivery.mime import message_outgoing_bytes
from tracking.delivery.mx import MxOutcome, host_addresses, mx_lookup
from tracking.delivery.smtp import MxConnection, SmtpReply
from tracking.delivery.state import Transition, messages_transition
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
        # A message claimed by a batch already, or handled: nothing to do. (Its batch is
        # running on another worker; this worker stays free for the next batch's task.)
        domain = (
            Message.objects.filter(due_filter(timezone.now()), pk=message_pk)
            .values_list("recipient_domain", flat=True)
            .first()
        )
        if domain is None:
            return 0
    messages = messages_claim(domain=domain, first_pk=message_pk)
    if messages:
        batch_deliver(domain=domain, messages=messages)
    return len(messages)


def batch_deliver(*, domain: str, messages: list[Message]) -> None:
    outcomes = Outcomes()
    try:
        _deliver_to_domain(domain, messages, outcomes)
    finally:
        outcomes.flush()


def _deliver_to_domain(domain: str, messages: list[Message], outcomes: Outcomes) -> None:
    lookup = mx_lookup(domain)
    if lookup.outcome is MxOutcome.NO_MX:
        for message in messages:
            outcomes.add(message, Disposition.NO_MX_RECORD, SmtpReply(None, lookup.detail, ""))
        return
    if lookup.outcome is MxOutcome.TEMPORARY:
        for message in messages:
            outcomes.temporary(message, SmtpReply(None, lookup.detail, ""))
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
            pending = _send_over_connection(host, address, pending, failures, outcomes)
            if not pending:
                return
    for message in pending:
        reply = failures[message.pk]
        if reply.permanent:  # e.g. every MX greeted with 554
            outcomes.add(message, Disposition.UNDELIVERABLE, reply)
        else:
            outcomes.temporary(message, reply)


def _send_over_connection(
    host: str,
    address: str,
    pending: list[Message],
    failures: dict[int, SmtpReply],
    outcomes: Outcomes,
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
            try:
                data = message_outgoing_bytes(message)
            except Exception as e:  # a message we cannot build must not stall its batch
                log.exception("message %s could not be built", message.pk)
                reply = SmtpReply(None, f"could not build the message: {e}"[:500], "")
                outcomes.add(message, Disposition.UNDELIVERABLE, reply)
                continue
            reply = connection.send(
                mail_from=verp_address(message),
                rcpt_to=message.recipient_address,
                data=data,
            )
            if reply.accepted:
                outcomes.add(message, Disposition.SENT, reply, delivery_date=timezone.now())
            elif reply.permanent:
                outcomes.add(message, Disposition.UNDELIVERABLE, reply)
            else:
                failures[message.pk] = reply
                left.append(message)
            if not connection.alive:
                rest = pending[index + 1 :]
                for other in rest:
                    failures[other.pk] = reply
                return left + rest
    return left


class Outcomes:
    """Delivery outcomes, written a few at a time in one transaction each.

    Writing every outcome at once would cost a transaction per message; writing them all at
    the end of a batch would, if the worker died mid-batch, send the whole batch again once
    its claim lapsed. FLUSH_EVERY bounds that repeat to a few messages.
    """

    FLUSH_EVERY = 25

    def __init__(self) -> None:
        self.pending: list[tuple[Message, str, SmtpReply, dict]] = []

    def add(self, message: Message, to: str, reply: SmtpReply, **fields) -> None:
        self.pending.append((message, to, reply, fields))
        if len(self.pending) >= self.FLUSH_EVERY:
            self.flush()

    def temporary(self, message: Message, reply: SmtpReply) -> None:
        """A temporary failure: `queued` for the next attempt, or `expired` once EMAIL_EXPIRY
        has passed since the message was received."""
        now = timezone.now()
        deadline = message.receive_date + timedelta(seconds=settings.EMAIL_EXPIRY)
        if now >= deadline and message.disposition == Disposition.QUEUED:
            detail = f"expired: {reply}"[:2000]
            self.add(message, Disposition.EXPIRED, reply, status_detail=detail)
            return
        schedule = settings.EMAIL_RETRY_SCHEDULE or [60]
        delay = schedule[min(max(message.attempt_count, 1) - 1, len(schedule) - 1)]
        # The last retry is at the deadline, so expiry is exact rather than a delay late.
        next_attempt_at = max(min(now + timedelta(seconds=delay), deadline), now)
        self.add(message, Disposition.QUEUED, reply, next_attempt_at=next_attempt_at)

    def flush(self) -> None:
        if not self.pending:
            return
        pending, self.pending = self.pending, []
        transitions = [
            Transition(message, to, {"last_smtp_response": str(reply)[:2000], **fields})
            for message, to, reply, fields in pending
        ]
        with transaction.atomic():
            relax_commit_durability()
            moved = messages_transition(transitions)
            DeliveryAttempt.objects.bulk_create(
                DeliveryAttempt(
                    message=message,
                    mx_host=reply.host,
                    smtp_code=reply.code,
                    smtp_text=reply.text[:2000],
                    outcome=to,
                )
                for (message, to, reply, _), made in zip(pending, moved, strict=True)
                if made
            )
        for (message, to, _, _), made in zip(pending, moved, strict=True):
            if not made:
                log.warning("message %s changed during delivery; %s not kept", message.pk, to)


def domain_backlog(*, domain: str, limit: int = 1000) -> int:
    """How many messages to `domain` are due now (counted up to `limit`)."""
    due = Message.objects.filter(due_filter(timezone.now()), recipient_domain=domain)
    return due.order_by()[:limit].count()


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
