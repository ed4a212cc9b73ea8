"""Routing stored inbound messages, in the worker: per recipient, forward alias mail to the
link's destination contact, relay proxy mail to the other party of the conversation, or hand a
bounce to bounce processing.

The whole routing of a message is one transaction holding the message's row: two workers
never route it twice, and a worker that dies half-way leaves it pending for the next one, with
none of its Messages half-made. Messages taken together (a batch) are routed together: their
recipients looked up at once, their Messages inserted at once, their statuses written at once.
"""

from __future__ import annotations

import email.utils
import logging
import time
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction
from django.utils import timezone

from conversations.inbound.admission import QUARANTINE_HEADER
from conversations.inbound.authentication import Verdict, inbound_authenticate
from conversations.inbound.raw_mail import (
    LOOP_HEADER,
    RELAY_KEEP,
    Content,
    ParsedMessage,
    content_of,
    extract_content,
    format_address,
    forward_headers,
    keep_headers,
)
from conversations.inbound.recipients import (
    Recipient,
    RouteKind,
    address_normalize,
    recipients_resolve,
)
from conversations.models import Conversation, InboundMessage
from conversations.services import (
    address_domain,
    conversation_for_alias,
    conversation_relay_thread,
    own_domains_among,
)
from tracking.delivery.durability import relax_commit_durability
from tracking.engagement.source_mime import mime_bytes, mime_parse, mime_tree_add_tracking
from tracking.models import Contact, Direction, Disposition, Link, Message
from tracking.services.bounces import bounce_process
from tracking.services.messages import MessageDraft, message_refuse, messages_accept
from tracking.text import text_safe

log = logging.getLogger(__name__)

THREAD_HEADERS = ("Message-ID", "In-Reply-To", "References")
# The writer's headers an aligned forward writes anew (_forward_alias).
ALIGNED_REPLACE = frozenset(
    {"from", "sender", "reply-to", "message-id", "in-reply-to", "references", "x-original-from"}
)
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
        _forward_alias(routing, recipient.address, recipient.link)
    else:
        _relay(routing, recipient.address, recipient.conversation)


def _is_auto_reply_not_bounce(parsed: ParsedMessage) -> bool:
    """Auto-Submitted mail that is neither a DSN (multipart/report) nor from a mail system
    (the plain-text bounces of older servers come from MAILER-DAEMON or postmaster)."""
    local = parsed.from_address.rpartition("@")[0].lower()
    from_mail_system = local in {"mailer-daemon", "postmaster", "mail-daemon", ""}
    return parsed.auto_submitted and not parsed.is_delivery_report and not from_mail_system


def _thread_headers(parsed: ParsedMessage) -> dict[str, str]:
    values = {name: _one_line(parsed.header_text(name)) for name in THREAD_HEADERS}
    return {name: value for name, value in values.items() if value}


def _one_line(value: str) -> str:
    return " ".join(value.split())


def _added_headers(routing: Routing, address: str) -> list[tuple[str, str]]:
    """What goes on top of the message we pass on: our loop header, and the headers
    receivers want that the sender left out."""
    return [(LOOP_HEADER, address), *_missing_headers(routing.parsed)]


def _draft_message_id(parsed: ParsedMessage, added: list[tuple[str, str]]) -> str:
    """The Message-ID header of the message we pass on: ours when we added one."""
    return dict(added).get("Message-ID") or parsed.header("message-id") or ""


def _missing_headers(parsed: ParsedMessage) -> list[tuple[str, str]]:
    """Message-ID and Date, when the sender left them out: many receivers refuse mail
    without them (RFC 5322 section 3.6 wants both)."""
    added = []
    if not parsed.message_id:
        added.append(("Message-ID", f"<{uuid.uuid4().hex}@{settings.SMTP_HELO_NAME}>"))
    if parsed.header("date") is None:
        added.append(("Date", _now_rfc5322()))
    return added


def _forward_alias(routing: Routing, address: str, link: Link) -> None:
    """Alias mail goes to the link's destination contact, aligned: From the writer's reverse
    address on our domain, shown as "<writer's name> (<writer's address>)", so DMARC judges
    our domain (which signs it) and not the writer's, whose signature our changes break.
    The writer's original From stays in X-Original-From, for the contact's eyes only; a
    Reply-To of the writer's is the reverse address too, so every reply comes back through
    us. The message opens or continues the (link, writer) conversation
    (conversation_for_alias): the contact's reply to the reverse address reaches the writer
    From the alias (`_relay`). The rest of the message passes as it came: To, Subject, Date,
    MIME structure and attachments; the Message-ID is ours, threading headers mapped as a
    relay maps them. Our Authentication-Results goes on top, for the ARC seal delivery adds.

    Mail with no From address to answer, or for a link without a contact who can receive
    it, is passed on (or recorded as refused) as it came."""
    parsed = routing.parsed
    contact = link.destination
    refusal = _alias_refusal(contact, routing.own_domains)
    writer = parsed.from_address.strip()
    # An address longer than RFC 5321's 254 characters cannot be a party (nor be replied to).
    if refusal is not None or "@" not in writer or len(writer) > 254:
        _forward_as_it_came(routing, address, link, refusal)
        return
    conversation = conversation_for_alias(
        link=link, writer_address=writer, writer_name=_one_line(parsed.from_name)
    )
    thread = _relay_thread(conversation, parsed)
    shown = _writer_shown(_one_line(parsed.from_name), writer)
    ours = [
        *_our_results(routing),
        (LOOP_HEADER, address),
        *_quarantine_headers(routing),
        ("From", format_address(shown, conversation.proxy_address)),
        ("X-Original-From", _one_line(parsed.header_text("from"))),
        *([("Reply-To", conversation.proxy_address)] if parsed.header("reply-to") else []),
        *thread.headers.items(),
    ]
    if parsed.header("date") is None:
        ours.append(("Date", _now_rfc5322()))
    forwarded = forward_headers(parsed.raw, prepend=ours, replace=ALIGNED_REPLACE)
    _pass_on(
        routing,
        address,
        conversation=conversation,
        source=forwarded,
        direction=Direction.ALIAS,
        sender=(writer, parsed.from_name),
        shown_name=shown,
        to=(conversation.party_b_address, conversation.party_b_name),
        thread=thread,
    )


def _forward_as_it_came(
    routing: Routing, address: str, link: Link, refusal: tuple[str, str] | None
) -> None:
    parsed = routing.parsed
    contact = link.destination
    added = [*_our_results(routing), *_added_headers(routing, address)]
    _pass_on(
        routing,
        address,
        link=link,
        source=forward_headers(parsed.raw, prepend=added),
        direction=Direction.ALIAS,
        sender=(parsed.from_address or text_safe(routing.inbound.mail_from), parsed.from_name),
        to=(contact.email, contact.name) if contact else ("", ""),
        thread_headers=_thread_headers(parsed),
        message_id=_draft_message_id(parsed, added),
        refusal=refusal,
    )


def _relay(routing: Routing, address: str, conversation: Conversation) -> None:
    """Mail to a conversation's address from one party goes to the other (so the reply comes
    back through us), once the evidence shows that party wrote it (`Verdict.vouches_for`).
    A proxy conversation's mail is From the proxy address; in an alias conversation the
    writer's mail is From their reverse address, the contact's From the link's alias.
    Only the headers a mail client needs pass (RELAY_KEEP), the threading ones with
    Message-IDs of ours (conversation_relay_thread): nothing that names the writer, their
    address or their machine reaches the other party."""
    parsed = routing.parsed
    if parsed.auto_submitted:
        routing.refuse(address, "an automatic message (Auto-Submitted) is not relayed")
        return
    if not routing.inbound.mail_from:
        # RFC 3834: automatic replies come with a null envelope sender, marked or not.
        routing.refuse(address, "a message with a null envelope sender is not relayed")
        return
    side = _party_of(conversation, parsed.from_address)
    if side is None:
        sender = parsed.from_address or text_safe(routing.inbound.mail_from)
        routing.refuse(
            address, f"{sender} is not a party of conversation {conversation.conversation_id}"
        )
        return
    if side == "a":
        sender = (conversation.party_a_address, conversation.party_a_name)
        to = (conversation.party_b_address, conversation.party_b_name)
    else:
        sender = (conversation.party_b_address, conversation.party_b_name)
        to = (conversation.party_a_address, conversation.party_a_name)
    trust = routing.verdict.vouches_for(sender[0])
    if trust.temporary:
        routing.retry = f"{address}: {trust.reason}"
        return
    if not trust.trusted:
        routing.refuse(address, f"not relayed as from {sender[0]}: {trust.reason}")
        return
    shown_name, from_address = _relayed_from(conversation, side, parsed.from_name)
    thread = _relay_thread(conversation, parsed)
    ours = [
        ("Received", f"by {settings.SMTP_HELO_NAME} (iovox relay); {_now_rfc5322()}"),
        (LOOP_HEADER, address),
        ("From", format_address(shown_name, from_address)),
        ("To", format_address(_one_line(to[1]), to[0])),
        *thread.headers.items(),
    ]
    if parsed.header("date") is None:
        ours.append(("Date", _now_rfc5322()))
    _pass_on(
        routing,
        address,
        conversation=conversation,
        source=keep_headers(parsed.raw, keep=RELAY_KEEP, prepend=ours),
        direction=Direction.RELAY,
        sender=(sender[0], sender[1] or parsed.from_name),
        shown_name=shown_name,
        to=to,
        thread=thread,
    )


def _pass_on(
    routing: Routing,
    address: str,
    *,
    source: bytes,
    direction: str,
    sender: tuple[str, str],
    to: tuple[str, str],
    conversation: Conversation | None = None,
    link: Link | None = None,
    shown_name: str = "",
    thread: Thread | None = None,
    thread_headers: dict[str, str] | None = None,
    message_id: str = "",
    refusal: tuple[str, str] | None = None,
) -> None:
    """The one draft builder of routing: the Message that passes `source` on (tracked when it
    will be sent), of the conversation's link (or `link`), recorded as routed."""
    parsed = routing.parsed
    link = conversation.link if conversation is not None else link
    assert link is not None
    if thread is not None:
        thread_headers, message_id = thread.headers, thread.message_id
    draft = MessageDraft(
        account=link.account,
        link=link,
        # The record's columns hold what a valid address and a sane name need; hostile
        # headers are cut to fit (the message itself passes on as it came).
        sender_address=_one_line(sender[0])[:254],
        sender_name=_one_line(sender[1])[:200],
        recipient_address=to[0],
        recipient_name=_one_line(to[1])[:200],
        subject=_one_line(parsed.subject)[:998],
        text_content=routing.content.text,
        html_content=routing.content.html,
        direction=direction,
        conversation_id=conversation.conversation_id if conversation else None,
        proxy_address=conversation.proxy_address if conversation else "",
        proxy_name=shown_name[:200],
        headers=thread_headers,
        source_message_id=message_id,
        **_source(routing, source, track=refusal is None),
    )
    routing.drafts.append((draft, refusal))
    routing.routed.append(address)


@dataclass(frozen=True)
class Thread:
    """The threading headers of a copy we pass on in a conversation."""

    message_id: str
    headers: dict[str, str]


def _relay_thread(conversation: Conversation, parsed: ParsedMessage) -> Thread:
    thread = conversation_relay_thread(
        conversation=conversation,
        message_id=parsed.header_text("message-id"),
        in_reply_to=parsed.header_text("in-reply-to"),
        references=parsed.header_text("references"),
    )
    headers = {
        "Message-ID": thread.message_id,
        "In-Reply-To": thread.in_reply_to,
        "References": thread.references,
    }
    return Thread(thread.message_id, {name: value for name, value in headers.items() if value})


def _relayed_from(conversation: Conversation, side: str, written_name: str) -> tuple[str, str]:
    """(display name, address) of the From a party's relayed mail shows the other party."""
    if conversation.kind == Conversation.Kind.ALIAS:
        if side == "a":
            name = _one_line(conversation.party_a_name or written_name)
            return _writer_shown(name, conversation.party_a_address), conversation.proxy_address
        return _one_line(conversation.party_b_name), conversation.link.email_address
    if side == "a":
        name = conversation.proxy_name or conversation.party_a_name or written_name
    else:
        name = conversation.party_b_name or written_name
    return _one_line(name), conversation.proxy_address


def _writer_shown(name: str, address: str) -> str:
    """ "Name (address)": who wrote, as the contact sees them beside the reverse address."""
    return f"{name} ({address})" if name else address


def _our_results(routing: Routing) -> list[tuple[str, str]]:
    """Our Authentication-Results (RFC 8601), as admission computed it."""
    results = routing.inbound.authentication_results
    return [("Authentication-Results", results)] if results else []


def _quarantine_headers(routing: Routing) -> list[tuple[str, str]]:
    """Mail its From domain's DMARC policy asks to quarantine is marked for the contact's
    spam filter (X-Spam-Flag, as SpamAssassin writes it) and says why in a header of ours."""
    if not routing.inbound.quarantined:
        return []
    domain = routing.inbound.authentication.get("from_domain", "")
    return [
        ("X-Spam-Flag", "YES"),
        (QUARANTINE_HEADER, f"dmarc=fail (p=quarantine) header.from={domain}"),
    ]


def _source(routing: Routing, source: bytes, *, track: bool) -> dict:
    """The `source_mime` of a Message about to be made, with its open and click tracking
    (for the message_id it is made for) when it will be sent: one parse of the bytes serves
    the tracking and the routing's text and HTML content, where delivery would parse them
    again. A message this cannot handle goes as it is, and delivery tries again."""
    if not track:
        return {"source_mime": source}
    message_id = uuid.uuid4()
    try:
        tree = mime_parse(source)
        routing.read_content(tree)  # before the tracking changes the HTML
        if mime_tree_add_tracking(tree, message_id=message_id):
            source = mime_bytes(tree)
    except Exception:  # noqa: BLE001 - a broken message must never stop routing
        log.warning("tracking inbound message %s when routed failed", routing.inbound.pk)
        return {"source_mime": source}
    return {"source_mime": source, "message_id": message_id, "source_tracked": True}


def _alias_refusal(contact: Contact | None, own_domains: set[str]) -> tuple[str, str] | None:
    if contact is None:
        return Disposition.NO_RULES, "the link has no destination contact"
    if not contact.email:
        return Disposition.RULE_ERROR, f"the destination contact {contact.contact_id} has no email"
    if address_domain(contact.email) in own_domains:
        return (
            Disposition.RULE_ERROR,
            f"the destination {contact.email} is one of our own addresses (a loop)",
        )
    return None


def _now_rfc5322() -> str:
    return email.utils.format_datetime(email.utils.localtime())


def _party_of(conversation: Conversation, from_address: str) -> str | None:
    """ "a" or "b": the party the From address names (case-insensitively), if any."""
    parties = {
        conversation.party_a_address.lower(): "a",
        conversation.party_b_address.lower(): "b",
    }
    return parties.get(from_address.strip().lower())
