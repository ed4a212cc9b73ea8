"""What routing passes on, and how it looks: alias mail forwarded aligned (From the writer's
reverse address), mail to a conversation's address relayed to the other party, both built as
Messages by one draft builder (`_pass_on`)."""

from __future__ import annotations

import email.utils
import logging
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING

from django.conf import settings

from conversations.inbound.admission import QUARANTINE_HEADER
from conversations.inbound.raw_mail import (
    LOOP_HEADER,
    RELAY_KEEP,
    ParsedMessage,
    format_address,
    forward_headers,
    keep_headers,
)
from conversations.models import Conversation
from conversations.services import conversation_for_alias, conversation_relay_thread
from tracking.addresses import address_domain
from tracking.engagement.source_mime import mime_bytes, mime_parse, mime_tree_add_tracking
from tracking.models import Contact, Direction, Disposition, Link
from tracking.services.messages import MessageDraft
from tracking.text import text_safe

if TYPE_CHECKING:
    from conversations.inbound.routing import Routing

log = logging.getLogger("conversations.inbound.routing")

THREAD_HEADERS = ("Message-ID", "In-Reply-To", "References")
# The writer's headers an aligned forward writes anew (forward_alias); X-Spam-Flag is ours
# alone to set, so a writer's "NO" cannot hide a quarantine.
ALIGNED_REPLACE = frozenset(
    {
        "from",
        "sender",
        "reply-to",
        "message-id",
        "in-reply-to",
        "references",
        "x-original-from",
        "x-spam-flag",
    }
)


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


def forward_alias(routing: Routing, address: str, link: Link) -> None:
    """Alias mail goes to the link's destination contact, aligned: From the writer's reverse
    address on our domain, shown as "<writer's name> (<writer's address>)", so DMARC judges
    our domain (which signs it) and not the writer's, whose signature our changes break.
    The writer's original From stays in X-Original-From, for the contact's eyes only; a
    Reply-To of the writer's is the reverse address too, so every reply comes back through
    us. The message opens or continues the (link, writer) conversation
    (conversation_for_alias): the contact's reply to the reverse address reaches the writer
    From the alias (`relay`). The rest of the message passes as it came: To, Subject, Date,
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


def relay(routing: Routing, address: str, conversation: Conversation) -> None:
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
