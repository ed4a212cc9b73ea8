"""Accepting messages for delivery, and refusing alias mail that has nowhere to go."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from email.parser import BytesHeaderParser
from email.policy import SMTP
from typing import Any

from django.conf import settings
from django.db import transaction

from iovox_email.metrics import SENDS_ACCEPTED
from tracking.addresses import address_domain
from tracking.delivery.state import InvalidTransition, message_transition
from tracking.events import EventDraft, event_wanted, events_emit
from tracking.headers import header_values_check
from tracking.models import (
    Account,
    Attachment,
    Direction,
    Disposition,
    EventType,
    Link,
    Message,
)

# Values that end up in a header line of mail we build: a line break in any of them would let
# the caller add headers (or a whole body) of their own (tracking/headers.py has the rule).
HEADER_BOUND_FIELDS = (
    "sender_address",
    "sender_name",
    "recipient_address",
    "recipient_name",
    "subject",
    "proxy_address",
    "proxy_name",
)


@dataclass(frozen=True)
class AttachmentDraft:
    disposition: str  # Attachment.Disposition: "attachment" or "inline"
    content_type: str
    filename: str
    content_id: str
    content: bytes


def new_smtp_message_id(message_id: uuid.UUID) -> str:
    return f"<{message_id.hex}@{settings.BOUNCE_DOMAIN}>"


def source_message_id(source_mime: bytes) -> str:
    headers = BytesHeaderParser(policy=SMTP).parsebytes(source_mime, headersonly=True)
    return str(headers.get("Message-ID", "")).strip()


@dataclass(frozen=True, kw_only=True)
class MessageDraft:
    """What `message_accept` stores: a message as the caller was asked to send it (API) or
    made it (forwarded and relayed mail, whose `source_mime` holds the finished message:
    delivery sends those bytes as they are)."""

    account: Account
    link: Link
    sender_address: str
    sender_name: str
    recipient_address: str
    recipient_name: str
    subject: str
    text_content: str
    html_content: str
    attachments: Sequence[AttachmentDraft] = ()
    direction: str = Direction.API
    conversation_id: uuid.UUID | None = None
    proxy_address: str = ""
    proxy_name: str = ""
    headers: dict[str, str] | None = None
    source_mime: bytes | None = None
    # The Message-ID header of `source_mime`, when the caller has read it already; else it
    # is read here.
    source_message_id: str | None = None
    # Given when `source_mime` already carries tracking made for this message_id.
    message_id: uuid.UUID | None = None
    source_tracked: bool = False


def message_accept(**draft: Any) -> Message:
    """Store a message as `received` with its attachments, for the worker's delivery loop to
    find once the transaction commits (tracking/worker.py). Takes the fields of MessageDraft
    as keyword arguments."""
    return messages_accept([MessageDraft(**draft)])[0]


def messages_accept(drafts: Sequence[MessageDraft]) -> list[Message]:
    """`message_accept` for several messages at once (a batch of routed inbound mail): one
    INSERT for all of them. Every draft is checked before anything is written, so a bad one
    stores none."""
    messages = [_message_of(draft) for draft in drafts]
    attachments = [
        _attachment_of(message, attachment)
        for message, draft in zip(messages, drafts, strict=True)
        for attachment in draft.attachments
    ]
    received = [m for m in messages if event_wanted(m.account_id, EventType.RECEIVED)]
    # One INSERT is atomic by itself: a transaction (two more round trips) only when
    # attachments or an event come with it. Inside a caller's transaction this nests as usual.
    with transaction.atomic() if attachments or received else contextlib.nullcontext():
        if len(messages) == 1:
            messages[0].save(force_insert=True)  # less CPU than bulk_create for one row
        else:
            Message.objects.bulk_create(messages)
        if attachments:
            Attachment.objects.bulk_create(attachments)
        if received:
            events_emit(EventDraft(m.account_id, EventType.RECEIVED, m.pk) for m in received)
    for message in messages:
        SENDS_ACCEPTED.labels(direction=message.direction).inc()
    return messages


def _message_of(draft: MessageDraft) -> Message:
    """The unsaved Message of a draft, its header-bound values checked."""
    if draft.link.account_id != draft.account.pk:
        raise ValueError("the link belongs to another account")
    fields = {name: getattr(draft, name) for name in HEADER_BOUND_FIELDS}
    headers = dict(draft.headers or {})
    if draft.source_mime is None:
        # Mail we build from these values (forwarded and relayed mail goes out as it came, and
        # its fields only describe it): refused here too, not only by the API's validation.
        _check_header_bound(fields, headers, draft.attachments)
    message_id = draft.message_id or uuid.uuid4()
    if draft.source_mime is None:
        smtp_message_id = new_smtp_message_id(message_id)
    elif draft.source_message_id is None:
        smtp_message_id = source_message_id(draft.source_mime)
    else:
        smtp_message_id = draft.source_message_id
    return Message(
        message_id=message_id,
        account=draft.account,
        link=draft.link,
        direction=draft.direction,
        conversation_id=draft.conversation_id,
        recipient_domain=address_domain(draft.recipient_address),
        text_content=draft.text_content,
        html_content=draft.html_content,
        headers=headers,
        source_mime=draft.source_mime,
        source_tracked=draft.source_tracked and draft.source_mime is not None,
        smtp_message_id=smtp_message_id,
        **fields,
    )


def _check_header_bound(
    fields: dict[str, str], headers: dict[str, str], attachments: Sequence[AttachmentDraft]
) -> None:
    header_values_check(fields)
    header_values_check(headers)
    header_values_check({"header names": "".join(headers)})
    for attachment in attachments:
        header_values_check(
            {
                "attachment filename": attachment.filename,
                "attachment id": attachment.content_id,
                "attachment type": attachment.content_type,
            }
        )


def _attachment_of(message: Message, draft: AttachmentDraft) -> Attachment:
    return Attachment(
        message=message,
        disposition=draft.disposition,
        content_type=draft.content_type,
        filename=draft.filename,
        content_id=draft.content_id,
        content=draft.content,
    )


def message_refuse(*, message: Message, disposition: str, detail: str) -> Message:
    """End a `received` message that will not be sent: `no_rules` (its link has no usable
    destination) or `rule_error` (the rule could not be applied), with the reason."""
    if disposition not in (Disposition.NO_RULES, Disposition.RULE_ERROR):
        raise ValueError(f"a refusal is no_rules or rule_error, not {disposition}")
    # Inbound code refuses in the transaction that accepted, so no worker has seen it yet.
    if not message_transition(message=message, to=disposition, status_detail=detail):
        raise InvalidTransition(f"message {message.message_id} changed while being refused")
    return message
