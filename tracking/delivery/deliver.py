"""Delivering a claimed batch of messages to the MX of their recipient domain (or through the
relay or ESP their transport names: transports.py), and expiring queued messages at their
deadline.

Messages to one domain go as a batch over one SMTP connection per MX address (MAIL, RCPT, DATA
per message), tried by MX preference. Each reply decides that message: 2xx `sent`, 5xx
`undeliverable`; 4xx, timeouts and refused connections try the next MX and, if none accepts,
leave it `queued` for a later attempt on EMAIL_RETRY_SCHEDULE, or `expired` after EMAIL_EXPIRY.
Outcomes are written as the replies come, a few at a time (see Outcomes), so a worker dying
mid-batch loses at most those few results, and those messages are sent again.
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from tracking.bounces import Bounce, bounce_classify
from tracking.delivery.compose import message_outgoing_bytes
from tracking.delivery.durability import relax_commit_durability
from tracking.delivery.esp import esp_deliver
from tracking.delivery.mx import MxOutcome, host_addresses, mx_lookup
from tracking.delivery.relay import relay_deliver
from tracking.delivery.smtp import MxConnection, RelayConnection, SmtpReply
from tracking.delivery.state import Transition, messages_transition
from tracking.delivery.transports import messages_by_transport, transport_problem
from tracking.delivery.verp import verp_address
from tracking.models import DeliveryAttempt, DeliveryTransport, Disposition, Message
from tracking.services.suppressions import suppressed_refuse, suppressions_from_replies

log = logging.getLogger(__name__)


def batch_deliver(messages: list[Message]) -> None:
    """Attempt delivery of claimed messages, all to one recipient domain, and write each
    outcome. Those whose recipient the account suppressed are refused, never attempted."""
    messages = suppressed_refuse(messages)
    if not messages:
        return
    outcomes = Outcomes()
    try:
        for transport, group in messages_by_transport(messages).items():
            if problem := transport_problem(transport):
                for message in group:
                    outcomes.temporary(message, SmtpReply(None, problem, ""))
            elif transport == DeliveryTransport.SMTP:
                relay_deliver(group, outcomes)
            elif transport == DeliveryTransport.ANYMAIL:
                esp_deliver(group, outcomes)
            else:
                _deliver_to_domain(group[0].recipient_domain, group, outcomes)
    finally:
        outcomes.flush()


def messages_expire(*, limit: int = 500) -> int:
    """Expire queued messages whose EMAIL_EXPIRY has passed; how many. At the deadline, even
    when an attempt is in flight (its outcome is then not kept): a slow MX must not make a
    message expire late. Retries are never set later than the deadline, so every message to
    expire is among the queued ones due now."""
    now = timezone.now()
    overdue = Message.objects.filter(
        disposition=Disposition.QUEUED,
        next_attempt_at__lte=now,
        receive_date__lte=now - timedelta(seconds=settings.EMAIL_EXPIRY),
    ).only("pk", "disposition", "state_version", "claim_token", "last_smtp_response")
    transitions = [
        Transition(
            message,
            Disposition.EXPIRED,
            {"status_detail": f"expired: {message.last_smtp_response}"[:2000]},
        )
        for message in overdue.order_by("next_attempt_at")[:limit]
    ]
    return sum(messages_transition(transitions))


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
            reply = outcomes.attempt(connection, message)
            if reply is not None:
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
    its claim lapsed. FLUSH_EVERY outcomes or FLUSH_AFTER seconds bound that repeat to a few
    messages of a fast MX, and to one of a slow one.
    """

    FLUSH_EVERY = 25
    FLUSH_AFTER = 0.1

    def __init__(self) -> None:
        self.pending: list[tuple[Message, str, SmtpReply, dict]] = []
        self.flushed = time.monotonic()

    def add(self, message: Message, to: str, reply: SmtpReply, **fields) -> None:
        self.pending.append((message, to, reply, fields))
        if (
            len(self.pending) >= self.FLUSH_EVERY
            or time.monotonic() - self.flushed >= self.FLUSH_AFTER
        ):
            self.flush()

    def attempt(
        self, connection: MxConnection | RelayConnection, message: Message
    ) -> SmtpReply | None:
        """Build the message and send it over `connection`. A 2xx or 5xx decides it (`sent`,
        `undeliverable`) and None is returned; a temporary reply is returned for the caller to
        decide (the next MX, a retry)."""
        try:
            data = message_outgoing_bytes(message)
        except Exception as e:  # a message we cannot build must not stall its batch
            log.exception("message %s could not be built", message.pk)
            reply = SmtpReply(None, f"could not build the message: {e}"[:500], "")
            self.add(message, Disposition.UNDELIVERABLE, reply)
            return None
        reply = connection.send(
            mail_from=verp_address(message), rcpt_to=message.recipient_address, data=data
        )
        if reply.accepted:
            self.add(message, Disposition.SENT, reply, delivery_date=timezone.now())
        elif reply.permanent:
            self.add(message, Disposition.UNDELIVERABLE, reply)
        else:
            return reply
        return None

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
        # Never later than the deadline, where the delivery loop expires it (messages_expire).
        next_attempt_at = max(min(now + timedelta(seconds=delay), deadline), now)
        self.add(message, Disposition.QUEUED, reply, next_attempt_at=next_attempt_at)

    def flush(self) -> None:
        self.flushed = time.monotonic()
        if not self.pending:
            return
        pending, self.pending = self.pending, []
        # A domain without mail (noMxRecord) is a hard failure of the address.
        # An ESP's "queued" is an acceptance, not a failure (esp.py).
        bounces = [
            None
            if to == Disposition.SENT or reply.accepted
            else bounce_classify(
                smtp_code=reply.code, text=reply.text, permanent=to == Disposition.NO_MX_RECORD
            )
            for _, to, reply, _ in pending
        ]
        transitions = [
            Transition(
                message,
                to,
                {"last_smtp_response": str(reply)[:2000], **fields},
                claimed=True,
                event=_event_fields(reply, bounce),
            )
            for (message, to, reply, fields), bounce in zip(pending, bounces, strict=True)
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
                    enhanced_code=bounce.enhanced_code if bounce else "",
                    bounce_type=bounce.bounce_type if bounce else "",
                    outcome=to,
                )
                for (message, to, reply, _), made, bounce in zip(
                    pending, moved, bounces, strict=True
                )
                if made
            )
            suppressions_from_replies(
                (message, reply, bounce)
                for (message, _, reply, _), made, bounce in zip(
                    pending, moved, bounces, strict=True
                )
                if made and bounce
            )
        for (message, to, _, _), made in zip(pending, moved, strict=True):
            if not made:
                # Expired at its deadline while the attempt was going on, or its claim lapsed
                # and another worker took it over.
                log.warning("message %s changed during delivery; %s not kept", message.pk, to)


def _event_fields(reply: SmtpReply, bounce: Bounce | None) -> dict:
    """What a delivery outcome's webhook event adds to the message."""
    fields = {"smtp_code": reply.code, "smtp_text": reply.text[:2000]}
    if bounce is not None:
        fields |= {"enhanced_code": bounce.enhanced_code, "bounce_type": bounce.bounce_type}
    return fields
