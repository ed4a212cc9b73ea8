"""Accepting messages for delivery, and refusing alias mail that has nowhere to go."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from email.parser import BytesHeaderParser
from email.policy import SMTP

from django.conf import settings
from django.db import transaction

from tracking.delivery.state import InvalidTransition, message_transition
from tracking.models import Account, Attachment, Direction, Disposition, Link, Message
from tracking.tasks import wake_delivery_soon

# Values that end up in a header line: a CR or LF in any of them would let the caller add
# headers (or a whole body) of their own.
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


class HeaderInjection(ValueError):
    pass


def has_line_break(value: str) -> bool:
    return "\r" in value or "\n" in value


def check_header_values(values: dict[str, str]) -> None:
    bad = sorted(name for name, value in values.items() if value and has_line_break(value))
    if bad:
        raise HeaderInjection(f"line breaks are not allowed in {', '.join(bad)}")


def domain_of(address: str) -> str:
    return address.rpartition("@")[2].strip().lower()


def new_smtp_message_id(message_id: uuid.UUID) -> str:
    return f"<{message_id.hex}@{settings.BOUNCE_DOMAIN}>"


def source_message_id(source_mime: bytes) -> str:
    headers = BytesHeaderParser(policy=SMTP).parsebytes(source_mime, headersonly=True)
    return str(headers.get("Message-ID", "")).strip()


def message_accept(
    *,
    account: Account,
    link: Link,
    sender_address: str,
    sender_name: str,
    recipient_address: str,
    recipient_name: str,
    subject: str,
    text_content: str,
    html_content: str,
    attachments: Sequence[AttachmentDraft] = (),
    direction: str = Direction.API,
    conversation_id: uuid.UUID | None = None,
    proxy_address: str = "",
    proxy_name: str = "",
    headers: dict[str, str] | None = None,
    source_mime: bytes | None = None,
) -> Message:
    """Store a message as `received` with its attachments, and queue its delivery once the
    transaction commits (a lost task is made up for by the delivery sweep).

    For forwarded and relayed mail, `source_mime` holds the finished message: delivery sends
    those bytes as they are.
    """
    if link.account_id != account.pk:
        raise ValueError("the link belongs to another account")
    fields = {
        "sender_address": sender_address,
        "sender_name": sender_name,
        "recipient_address": recipient_address,
        "recipient_name": recipient_name,
        "subject": subject,
        "proxy_address": proxy_address,
        "proxy_name": proxy_name,
    }
    check_header_values(fields)
    check_header_values(dict(headers or {}))
    check_header_values({"header names": "".join(headers or {})})
    for draft in attachments:
        check_header_values(
            {
                "attachment filename": draft.filename,
                "attachment id": draft.content_id,
                "attachment type": draft.content_type,
            }
        )
    # One row alone is atomic by itself: a transaction (two more round trips) only when
    # attachments come with it. Inside a caller's transaction this nests as usual.
    with transaction.atomic() if attachments else contextlib.nullcontext():
        message_id = uuid.uuid4()
        message = Message.objects.create(
            message_id=message_id,
            account=account,
            link=link,
            direction=direction,
            conversation_id=conversation_id,
            recipient_domain=domain_of(recipient_address),
            text_content=text_content,
            html_content=html_content,
            headers=dict(headers or {}),
            source_mime=source_mime,
            smtp_message_id=(
                source_message_id(source_mime) if source_mime else new_smtp_message_id(message_id)
            ),
            **fields,
        )
        if attachments:
            Attachment.objects.bulk_create(
                Attachment(
                    message=message,
                    disposition=draft.disposition,
                    content_type=draft.content_type,
                    filename=draft.filename,
                    content_id=draft.content_id,
                    content=draft.content,
                )
                for draft in attachments
            )
    domain = message.recipient_domain
    # robust: the message is committed by then; if queueing fails the sweep delivers it, and
    # the caller must not see an error for a message that was accepted.
    transaction.on_commit(lambda: wake_delivery_soon(domain), robust=True)
    return message


def message_refuse(*, message: Message, disposition: str, detail: str) -> Message:
    """End a `received` message that will not be sent: `no_rules` (its link has no usable
    destination) or `rule_error` (the rule could not be applied), with the reason."""
    if disposition not in (Disposition.NO_RULES, Disposition.RULE_ERROR):
        raise ValueError(f"a refusal is no_rules or rule_error, not {disposition}")
    # A claim by a delivery worker bumps state_version without moving the message; read it
    # again once in that case. Inbound code refuses in the transaction that accepted, so no
    # worker can have seen the message yet.
    for _ in range(2):
        if message_transition(message=message, to=disposition, status_detail=detail):
            return message
        message.refresh_from_db()
    raise InvalidTransition(f"message {message.message_id} changed while being refused")
