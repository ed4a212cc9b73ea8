"""Delivery through an ESP with django-anymail (DELIVERY_TRANSPORT=anymail, ANYMAIL_ESP).

The message the ESP gets is the one an MX would: our outgoing bytes, with our open pixel and
click links in its content, taken apart into anymail's fields (ESP APIs take fields, not MIME).
The ESP's own tracking is turned off, and its DKIM signature replaces ours (it rewrites the
message). Its message id is kept on the message; its tracking webhooks (esp_events.py) move the
message on from there.

What the ESP says decides the attempt (docs/transports.md has the table):
  sent                         -> `sent`
  queued, scheduled, unknown   -> `queued`, waiting on the ESP's events (no retry of ours)
  rejected, invalid            -> `undeliverable`
  failed, an API or network error -> `queued` for a retry on EMAIL_RETRY_SCHEDULE
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from email import policy
from email.encoders import encode_base64
from email.message import EmailMessage
from email.mime.base import MIMEBase
from email.parser import BytesParser
from typing import TYPE_CHECKING

from anymail.exceptions import AnymailError, AnymailRecipientsRefused
from anymail.message import AnymailMessage
from django.conf import settings
from django.core.mail import get_connection
from django.utils import timezone

from tracking.delivery.compose import message_outgoing_bytes
from tracking.delivery.transports import ESP_BACKENDS
from tracking.models import Disposition, Message

if TYPE_CHECKING:
    from tracking.delivery.deliver import Outcomes

log = logging.getLogger(__name__)

SENT = {"sent"}
WAITING = {"queued", "scheduled", "unknown"}
REFUSED = {"rejected", "invalid"}
# The ESPs whose own open and click tracking may be on (by default or in the account's
# settings), turned off per message. Amazon SES tracks only through a configuration set.
ESP_OWN_TRACKING = frozenset({"mailgun", "postmark", "sendgrid", "sparkpost"})

# Headers that anymail's fields carry (or that the ESP writes itself); the rest go as they are.
FIELD_HEADERS = frozenset(
    {
        "from",
        "to",
        "cc",
        "bcc",
        "subject",
        "mime-version",
        "content-type",
        "content-transfer-encoding",
        "content-disposition",
        "dkim-signature",
        "return-path",
        "received",
    }
)


@dataclass(frozen=True)
class EspReply:
    """What the ESP answered, shaped as delivery's SMTP replies are (Outcomes reads both)."""

    code: int | None  # the HTTP status of an API error; None otherwise
    text: str
    host: str  # the ESP's name
    accepted: bool = False
    permanent: bool = False

    def __str__(self) -> str:
        return f"{self.host}: {self.text}"


def esp_deliver(messages: list[Message], outcomes: Outcomes) -> None:
    """Send claimed messages through ANYMAIL_ESP over one backend connection."""
    esp = settings.ANYMAIL_ESP
    try:
        connection = get_connection(ESP_BACKENDS[esp], fail_silently=False)
        connection.open()
    except Exception as e:  # a backend that cannot start (settings, credentials): retry
        log.exception("the %s backend could not be opened", esp)
        for message in messages:
            outcomes.temporary(message, EspReply(None, f"failed: {e}"[:1000], esp))
        return
    try:
        for message in messages:
            _send_one(esp, connection, message, outcomes)
    finally:
        connection.close()


def _send_one(esp: str, connection, message: Message, outcomes: Outcomes) -> None:
    try:
        email = esp_message(message, esp=esp, connection=connection)
    except Exception as e:  # a message we cannot build must not stall its batch
        log.exception("message %s could not be built", message.pk)
        reply = EspReply(None, f"could not build the message: {e}"[:500], esp, permanent=True)
        outcomes.add(message, Disposition.UNDELIVERABLE, reply)
        return
    try:
        email.send()
    except AnymailRecipientsRefused:
        pass  # its status says rejected or invalid, below
    except AnymailError as e:
        code = getattr(e, "status_code", None)
        text = " ".join(str(e).split())[:1000]
        log.warning("%s refused message %s (%s): %s", esp, message.pk, code, text)
        outcomes.temporary(message, EspReply(code, f"failed: {text}", esp))
        return
    status = email.anymail_status
    recipient = status.recipients.get(message.recipient_address.lower()) or next(
        iter(status.recipients.values()), None
    )
    state = recipient.status if recipient else "unknown"
    # Mailgun answers "<id>" and names it id in its events: kept without the brackets.
    esp_id = ((recipient.message_id if recipient else status.message_id) or "").strip("<>")
    text = f"{state} (id {esp_id})" if esp_id else state
    if state in SENT:
        reply = EspReply(None, text, esp, accepted=True)
        fields = {"delivery_date": timezone.now(), "esp_message_id": esp_id}
        outcomes.add(message, Disposition.SENT, reply, **fields)
    elif state in WAITING:
        # Accepted: the ESP's events say what became of it, so nothing of ours is due.
        reply = EspReply(None, text, esp, accepted=True)
        outcomes.add(
            message, Disposition.QUEUED, reply, next_attempt_at=None, esp_message_id=esp_id
        )
    elif state in REFUSED:
        reply = EspReply(None, text, esp, permanent=True)
        outcomes.add(message, Disposition.UNDELIVERABLE, reply, esp_message_id=esp_id)
    else:  # "failed"
        outcomes.temporary(message, EspReply(None, text, esp))


def esp_message(message: Message, *, esp: str, connection=None) -> AnymailMessage:
    """Our outgoing message as anymail's fields: the same subject, sender, headers, text, HTML
    (tracked) and attachments, to the message's recipient; the ESP's tracking off."""
    parsed = BytesParser(policy=policy.default).parsebytes(message_outgoing_bytes(message))
    text_part = parsed.get_body(preferencelist=("plain",))
    html_part = parsed.get_body(preferencelist=("html",))
    email = AnymailMessage(
        subject=str(parsed.get("Subject", "")),
        body=text_part.get_content() if text_part is not None else "",
        from_email=str(parsed["From"]),
        to=[message.recipient_address],
        headers={
            name: str(value) for name, value in parsed.items() if name.lower() not in FIELD_HEADERS
        },
        connection=connection,
    )
    if html_part is not None:
        email.attach_alternative(html_part.get_content(), "text/html")
    for part in parsed.walk():
        if part.is_multipart() or part is text_part or part is html_part:
            continue
        email.attach(_attachment(part))
    if esp in ESP_OWN_TRACKING:
        email.track_opens = False
        email.track_clicks = False
    email.metadata = {"iovox_message_id": str(message.message_id)}
    return email


def _attachment(part: EmailMessage) -> MIMEBase:
    """A MIME part as the attachment Django and anymail take: inline (with its Content-ID)
    or attached, with its filename."""
    attachment = MIMEBase(part.get_content_maintype(), part.get_content_subtype())
    attachment.set_payload(part.get_payload(decode=True) or b"")
    encode_base64(attachment)
    filename = part.get_filename()
    params = {"filename": filename} if filename else {}
    if part["Content-ID"]:
        attachment.add_header("Content-ID", str(part["Content-ID"]))
        attachment.add_header("Content-Disposition", "inline", **params)
    else:
        attachment.add_header("Content-Disposition", "attachment", **params)
    return attachment
