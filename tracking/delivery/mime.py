"""The bytes that go on the wire for a message.

API mail is built here from its fields:

    multipart/mixed                       (only when there are attachments)
      multipart/alternative
        text/plain
        multipart/related                 (only when there are inline parts)
          text/html
          inline parts, each with its Content-ID
      attachments, each with its filename

Non-ASCII names and subjects are RFC 2047 encoded words, non-ASCII filenames RFC 2231
parameters (the email package's SMTP policy does both, and folds lines with CRLF).
Forwarded and relayed mail carries `source_mime`, already rewritten by the inbound code, and
is sent as it is.
"""

from __future__ import annotations

from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import format_datetime

from tracking.models import Attachment, Message

# 7bit: non-ASCII text goes quoted-printable or base64, so no MX needs 8BITMIME.
POLICY = SMTP.clone(cte_type="7bit")


def message_outgoing_bytes(message: Message) -> bytes:
    """What delivery hands to the MX: the one place every outgoing message passes through."""
    if message.source_mime:
        return bytes(message.source_mime)
    return message_build_mime(message)


def _address(name: str, address: str) -> Address:
    local, _, domain = address.rpartition("@")
    return Address(display_name=name, username=local, domain=domain)


def message_build_mime(message: Message, attachments: list[Attachment] | None = None) -> bytes:
    """The MIME message of API mail. `attachments` may be passed when already loaded."""
    if attachments is None:
        attachments = list(message.attachments.all())
    inline = [a for a in attachments if a.disposition == Attachment.Disposition.INLINE]
    attached = [a for a in attachments if a.disposition != Attachment.Disposition.INLINE]

    root = EmailMessage(policy=POLICY)
    if message.proxy_address:
        sender = _address(message.proxy_name or message.sender_name, message.proxy_address)
    else:
        sender = _address(message.sender_name, message.sender_address)
    root["From"] = sender
    root["To"] = _address(message.recipient_name, message.recipient_address)
    root["Subject"] = message.subject
    root["Date"] = format_datetime(message.receive_date)
    root["Message-ID"] = message.smtp_message_id
    for name, value in (message.headers or {}).items():
        root[name] = value

    root.set_content(message.text_content)
    if message.html_content or inline:
        root.add_alternative(message.html_content, subtype="html")
        if inline:
            html_part = root.get_payload()[1]
            for part in inline:
                maintype, _, subtype = part.content_type.partition("/")
                html_part.add_related(
                    bytes(part.content),
                    maintype=maintype,
                    subtype=subtype or "octet-stream",
                    cid=f"<{part.content_id}>",
                    disposition="inline",
                    filename=part.filename or None,
                )
    for part in attached:
        maintype, _, subtype = part.content_type.partition("/")
        root.add_attachment(
            bytes(part.content),
            maintype=maintype,
            subtype=subtype or "octet-stream",
            filename=part.filename,
        )
    return root.as_bytes(policy=POLICY)
