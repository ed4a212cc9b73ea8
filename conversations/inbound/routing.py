"""Routing stored inbound messages, in the worker: per recipient, forward alias mail to the
link's destination contact, relay mail to a conversation's address to its other party (both
built in forwarding.py), or hand a bounce to bounce processing.

The whole routing of a message is one transaction holding the message's row: two workers
never route it twice, and a worker that dies half-way leaves it pending for the next one, with
none of its Messages half-made. Messages taken together (a batch) are routed together: their
recipients looked up at once, their Messages inserted at once, their statuses written at once.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from conversations.inbound.authentication import Verdict, inbound_authenticate
from conversations.inbound.forwarding import forward_alias, relay
from conversations.inbound.raw_mail import (
    Content,
    ParsedMessage,
    content_of,
    extract_content,
)
from conversations.inbound.recipients import (
    Recipient,
    RouteKind,
    address_normalize,
    recipients_resolve,
)
from conversations.models import InboundMessage
from conversations.services import own_domains_among
from tracking.addresses import address_domain
from tracking.delivery.durability import relax_commit_durability
from tracking.models import Message
from tracking.services.bounces import bounce_process
from tracking.services.messages import MessageDraft, message_refuse, messages_accept
from tracking.text import text_safe

log = logging.getLogger(__name__)

# One call routes at most this many messages before it returns, so the routing loop renews its
# lease between calls (tracking/worker.py) however long a flood lasts.
ROUTE_LIMIT = 200
# SQLite's write lock has no queue: a writer that finds it taken sleeps and retries, so a worker
# routing back to back would starve the SMTP server's inserts. A short gap between batches
# lets them in (measured: twice the messages a second end to end with 3 ms).
SQLITE_GAP = 0.003
# Messages taken and routed in one transaction. Smaller on SQLite, whose one write lock the
# batch holds: 20 routed 2.6 times the messages a second of one at a time, end to end (8% ->
# 21% of the plain sink), 50 a little less.
ROUTE_BATCH = 50
ROUTE_BATCH_SQLITE = 20
# After a batch that was not full, the wait before the next (PostgreSQL). A batch costs about
# 3 ms of fixed work (the claim, the lookups, the writes) and 0.5 ms a message: routing a
# stream as it trickles in, 4 messages a batch, cost twice the CPU a message of full batches,
# CPU the server and delivery needed. Mail can wait 20 ms.
ROUTE_LINGER = 0.02


@dataclass
class Routing:
    """What became of each recipient of one inbound message."""

    inbound: InboundMessage
    parsed: ParsedMessage
    # Of the batch: who its recipients are, and which destination domains are our own.
    recipients: dict[str, Recipient] = field(default_factory=dict)
    own_domains: set[str] = field(default_factory=set)
    messages: list[Message] = field(default_factory=list)
    # Messages to accept with the batch's, each with its refusal (disposition, detail).
    drafts: list[tuple[MessageDraft, tuple[str, str] | None]] = field(default_factory=list)
    routed: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)
    # Why the message must be routed again later (a DNS failure while authenticating its
    # sender); then nothing of this attempt is kept.
    retry: str = ""
    _content: Content | None = None
    _verdict: Verdict | None = None

    @property
    def verdict(self) -> Verdict:
        """The sender's SPF, DKIM and DMARC: as found at admission, or checked the first time
        a recipient asks."""
        if self._verdict is None and self.inbound.authentication:
            self._verdict = Verdict.from_json(self.inbound.authentication)
        if self._verdict is None:
            inbound = self.inbound
            self._verdict = inbound_authenticate(
                raw=self.parsed.raw, ip=inbound.peer, mail_from=inbound.mail_from, helo=inbound.helo
            )
        return self._verdict

    @property
    def content(self) -> Content:
        if self._content is None:
            self._content = extract_content(self.parsed.raw)
        return self._content

    def read_content(self, tree) -> None:
        """Take the content from a parse of the message made for another purpose (the same
        body, other headers), sparing `content` a parse of its own."""
        if self._content is None:
            self._content = content_of(tree)

    def refuse(self, address: str, reason: str) -> None:
        self.refused.append(f"{address}: {reason}")

    @property
    def problems(self) -> list[str]:
        return self.parsed.problems + (self._content.problems if self._content else [])


def inbound_route_pending(*, limit: int = ROUTE_LIMIT) -> int:
    """Route pending messages, oldest first, until none is left (or `limit`); how many were
    routed. Several workers may do this at once: each message is taken by one of them.

    A batch of messages is taken and routed in one transaction (fewer round trips); if one
    of them fails, the batch rolls back and each is routed on its own, so only that one ends
    `failed`. On PostgreSQL a batch that was not full is followed by a short wait
    (ROUTE_LINGER) so the next is fuller; on SQLite every batch by a gap (SQLITE_GAP)."""
    sqlite = connection.vendor == "sqlite"
    size = ROUTE_BATCH_SQLITE if sqlite else ROUTE_BATCH
    done = 0
    while done < limit:
        routed = _route_batch(size)
        if not routed:
            break
        done += routed
        if sqlite:
            time.sleep(SQLITE_GAP)
        elif routed < size:
            time.sleep(ROUTE_LINGER)
    return done


def _route_batch(size: int) -> int:
    pks: list[int] = []
    try:
        with transaction.atomic():
            batch = list(
                InboundMessage.objects.filter(status=InboundMessage.Status.PENDING)
                .select_for_update(skip_locked=True)
                .order_by("received_at", "pk")[:size]
            )
            pks = [inbound.pk for inbound in batch]
            if batch:
                relax_commit_durability()  # see inbound_route
                _route_together(batch)
            return len(batch)
    except Exception:
        if not pks:
            raise
        log.warning("a batch of %d inbound messages failed; routing them one by one", len(pks))
        for pk in pks:
            inbound_route(inbound_pk=pk)
        return len(pks)


def _route_together(batch: Sequence[InboundMessage]) -> None:
    """Route the messages of a batch, inside the caller's transaction."""
    routings = [
        Routing(inbound=inbound, parsed=ParsedMessage.parse(bytes(inbound.raw)))
        for inbound in batch
    ]
    recipients = recipients_resolve(
        address for routing in routings for address in routing.inbound.rcpt_to
    )
    destinations = [
        recipient.link.destination.email
        for recipient in recipients.values()
        if recipient.kind == RouteKind.ALIAS and recipient.link.destination
    ]
    own_domains = own_domains_among(address_domain(email) for email in destinations if email)
    for routing in routings:
        routing.recipients, routing.own_domains = recipients, own_domains
        for address in routing.inbound.rcpt_to:
            _route_recipient(routing, address)
        if routing.retry:
            # All of the message is routed again later, so none of it is passed on twice.
            # (A bounce recorded meanwhile is recorded again then; a null sender, which
            # every bounce has, is refused by the relay before any DNS lookup.)
            for outcomes in (routing.drafts, routing.messages, routing.routed, routing.refused):
                outcomes.clear()
    _accept(routings)
    _record(routings)


def inbound_route(*, inbound_pk: int | None = None) -> InboundMessage | None:
    """Route one pending message, the given one or else the oldest that no other worker
    holds; None when there is none (already routed, or nothing pending).

    The message row stays locked (SKIP LOCKED for the others) until its Messages and its
    status commit together, so a message is routed once, and a worker that dies half-way
    leaves it pending, with nothing half-made."""
    pending = InboundMessage.objects.filter(status=InboundMessage.Status.PENDING)
    if inbound_pk is not None:
        pending = pending.filter(pk=inbound_pk)
    claimed: int | None = None
    try:
        with transaction.atomic():
            inbound = (
                pending.select_for_update(skip_locked=True).order_by("received_at", "pk").first()
            )
            if inbound is None:
                return None
            claimed = inbound.pk
            # Lost in a database crash, this commit leaves the message pending, to be routed
            # again: at worst a duplicate with the same Message-ID, mail's at-least-once.
            relax_commit_durability()
            _route_together([inbound])
            return inbound
    except Exception as exc:
        if claimed is None:
            raise
        # Rolled back, so the message is pending again: record why it could not be routed,
        # and when it is tried again.
        log.exception("routing inbound message %s failed", claimed)
        pending = InboundMessage.objects.filter(pk=claimed, status=InboundMessage.Status.PENDING)
        for attempts in pending.values_list("attempts", flat=True):
            pending.update(
                **_retried(attempts, f"{type(exc).__name__}: {exc}", InboundMessage.Status.FAILED)
            )
        return InboundMessage.objects.get(pk=claimed)


def _accept(routings: list[Routing]) -> None:
    """Store the Messages the routings made, with one INSERT."""
    made = [(routing, *draft) for routing in routings for draft in routing.drafts]
    messages = messages_accept([draft for _, draft, _ in made])
    for (routing, _, refusal), message in zip(made, messages, strict=True):
        if refusal:
            message_refuse(message=message, disposition=refusal[0], detail=refusal[1])
        routing.messages.append(message)


def _record(routings: list[Routing]) -> None:
    """Each message's status and its Messages, one UPDATE per outcome (most share one)."""
    outcomes: dict[tuple, list[int]] = defaultdict(list)
    for routing in routings:
        outcome = _outcome(routing)
        for name, value in outcome.items():
            setattr(routing.inbound, name, value)
        outcomes[tuple(outcome.items())].append(routing.inbound.pk)
    for outcome, pks in outcomes.items():
        InboundMessage.objects.filter(pk__in=pks).update(**dict(outcome))
    through = InboundMessage.messages.through
    through.objects.bulk_create(
        through(inboundmessage_id=routing.inbound.pk, message_id=message.pk)
        for routing in routings
        for message in routing.messages
    )


def _outcome(routing: Routing) -> dict:
    """The fields of a routed message's row that record what became of it."""
    if routing.retry:
        outcome = _retried(routing.inbound.attempts, routing.retry, InboundMessage.Status.REFUSED)
    else:
        routed = bool(routing.routed)
        outcome = {
            "status": InboundMessage.Status.ROUTED if routed else InboundMessage.Status.REFUSED,
            "error": text_safe("\n".join(routing.refused + routing.problems)),
            "attempts": routing.inbound.attempts + 1,
            "retry_at": None,
        }
    if routing._verdict is not None:
        outcome |= {
            "spf": routing._verdict.spf,
            "dkim": routing._verdict.dkim,
            "dmarc": routing._verdict.dmarc,
            "authentication_results": routing._verdict.authentication_results,
        }
    return outcome


def _retried(attempts: int, reason: str, last: str) -> dict:
    """The row of a message whose routing could not finish this time (one more attempt):
    `deferred` until the next delay of INBOUND_RETRY_SCHEDULE, or, after the last, ended
    with status `last` and the reason."""
    attempts += 1
    schedule = settings.INBOUND_RETRY_SCHEDULE
    reason = text_safe(reason)[:10000]
    if attempts > len(schedule):
        return {
            "status": last,
            "error": f"gave up after {attempts} attempts: {reason}",
            "attempts": attempts,
            "retry_at": None,
        }
    return {
        "status": InboundMessage.Status.DEFERRED,
        "error": f"attempt {attempts}: {reason}",
        "attempts": attempts,
        "retry_at": timezone.now() + timedelta(seconds=schedule[attempts - 1]),
    }


def _route_recipient(routing: Routing, address: str) -> None:
    recipient = routing.recipients.get(address_normalize(address))
    if recipient is None:
        routing.refuse(address, "no longer an alias, proxy or bounce address")
    elif recipient.kind == RouteKind.BOUNCE and _is_auto_reply_not_bounce(routing.parsed):
        # Out-of-office replies sometimes go to the Return-Path: the message was delivered.
        routing.refuse(address, "an automatic reply, not a delivery report: nothing to do")
    elif recipient.kind == RouteKind.BOUNCE:
        message = bounce_process(raw=routing.parsed.raw, rcpt_to=recipient.address)
        if message is None:
            routing.refuse(address, "not a bounce of a message we sent")
        else:
            routing.messages.append(message)
            routing.routed.append(address)
    elif routing.parsed.is_delivery_report:
        # Bounces come back to the VERP return path; one sent to an alias or a proxy address
        # (by a server that answers the From header) is never passed on to a person.
        routing.refuse(address, "a delivery report is not forwarded")
    elif recipient.kind == RouteKind.ALIAS:
        forward_alias(routing, recipient.address, recipient.link)
    else:
        relay(routing, recipient.address, recipient.conversation)


def _is_auto_reply_not_bounce(parsed: ParsedMessage) -> bool:
    """Auto-Submitted mail that is neither a DSN (multipart/report) nor from a mail system
    (the plain-text bounces of older servers come from MAILER-DAEMON or postmaster)."""
    local = parsed.from_address.rpartition("@")[0].lower()
    from_mail_system = local in {"mailer-daemon", "postmaster", "mail-daemon", ""}
    return parsed.auto_submitted and not parsed.is_delivery_report and not from_mail_system
