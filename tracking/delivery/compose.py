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
is sent as it is, but for open and click tracking in its HTML parts (tracking.engagement).
"""

from __future__ import annotations

import uuid
from email import encoders
from email.charset import QP, Charset
from email.header import Header
from email.message import Message as MimePart
from email.mime.base import MIMEBase
from email.mime.multipart import MIMEMultipart
from email.policy import Compat32, compat32
from email.utils import format_datetime, formataddr

from tracking.delivery.dkim import arc_seal, dkim_sign
from tracking.engagement.content import OutgoingContent, message_tracked_content
from tracking.engagement.source_mime import mime_add_tracking
from tracking.headers import header_values_check, headers_write
from tracking.models import Attachment, Direction, Message


# The email.mime classes with the compat32 policy: several times faster than EmailMessage with
# the modern policies (which parse every header back), and the worker builds every message.
class _WirePolicy(Compat32):
    def fold_binary(self, name: str, value) -> bytes:
        # A short printable ASCII value folds to itself; the Header machinery that compat32
        # runs every header through was a quarter of building a message.
        if (
            isinstance(value, str)
            and value.isascii()
            and value.isprintable()
            and len(name) + len(value) + 2 <= self.max_line_length
        ):
            return f"{name}: {value}{self.linesep}".encode("ascii")
        return super().fold_binary(name, value)


WIRE = _WirePolicy(linesep="\r\n", max_line_length=78)
# A message's attachments when loaded with it (delivery.claims), else they are read here.
LOADED_ATTACHMENTS = "loaded_attachments"
UTF8_QP = Charset("utf-8")
UTF8_QP.body_encoding = QP  # readable for mostly-ASCII text, and wraps long lines


def message_outgoing_bytes(message: Message) -> bytes:
    """What delivery hands to the MX: the one place every outgoing message passes through,
    where open and click tracking goes in (the same bytes on every attempt) and, last, our
    DKIM signature and, on forwarded alias mail, our ARC seal over the writer's authentication
    as we found it (tracking/delivery/dkim.py)."""
    if message.source_mime and message.source_tracked:
        data = bytes(message.source_mime)  # tracked already, when it was routed
    elif message.source_mime:
        data = mime_add_tracking(bytes(message.source_mime), message_id=message.message_id)
    else:
        attachments = getattr(message, LOADED_ATTACHMENTS, None)
        content = message_tracked_content(message)
        data = message_build_mime(message, attachments, content=content)
    data = dkim_sign(data)
    if message.direction == Direction.ALIAS and message.source_mime:
        data = arc_seal(data)
    return data


def _header(value: str) -> str | Header:
    return value if value.isascii() else Header(value, "utf-8")


def _address(name: str, address: str) -> str:
    return formataddr((name, address), charset="utf-8")


def _text(text: str, subtype: str) -> MimePart:
    # What MIMEText(text, subtype, UTF8_QP) makes, without its setting and re-parsing the
    # charset parameter: that was a fifth of building a message.
    part = MimePart(policy=compat32)
    part["Content-Type"] = f'text/{subtype}; charset="utf-8"'
    part["Content-Transfer-Encoding"] = "quoted-printable"
    part.set_payload(UTF8_QP.body_encode(text))
    return part


def _binary(attachment: Attachment) -> MIMEBase:
    # These become parameters of Content-Type and Content-Disposition, and the Content-ID.
    header_values_check(
        {
            "attachment type": attachment.content_type,
            "attachment filename": attachment.filename,
            "attachment id": attachment.content_id,
        }
    )
    maintype, _, subtype = attachment.content_type.partition("/")
    part = MIMEBase(maintype, subtype or "octet-stream")
    del part["MIME-Version"]
    part.set_payload(bytes(attachment.content))
    encoders.encode_base64(part)
    filename = attachment.filename
    params = {}
    if filename:
        # RFC 2231 for a non-ASCII name: filename*=utf-8''r%C3%A9sum%C3%A9.pdf
        params["filename"] = filename if filename.isascii() else ("utf-8", "", filename)
    if attachment.disposition == Attachment.Disposition.INLINE:
        part.add_header("Content-ID", f"<{attachment.content_id}>")
        part.add_header("Content-Disposition", "inline", **params)
    else:
        part.add_header("Content-Disposition", "attachment", **params)
    return part


def _multipart(subtype: str, parts: list) -> MIMEMultipart:
    # A random boundary of our own: 122 random bits cannot occur in the parts by chance, and
    # the generator's own choice compiles a new regular expression for every message to check
    # that, for every message.
    container = MIMEMultipart(subtype, boundary=f"=_{uuid.uuid4().hex}", _subparts=parts)
    del container["MIME-Version"]
    return container


def message_build_mime(
    message: Message,
    attachments: list[Attachment] | None = None,
    *,
    content: OutgoingContent | None = None,
) -> bytes:
    """The MIME message of API mail. `attachments` may be passed when already loaded;
    `content` replaces the message's own HTML and text (with tracking, when sending)."""
    content = content or OutgoingContent(html=message.html_content, text=message.text_content)
    if attachments is None:
        attachments = list(message.attachments.all())
    inline = [_binary(a) for a in attachments if a.disposition == Attachment.Disposition.INLINE]
    attached = [_binary(a) for a in attachments if a.disposition != Attachment.Disposition.INLINE]

    body = _text(content.text, "plain")
    if content.html or inline:
        html = _text(content.html, "html")
        if inline:
            html = _multipart("related", [html, *inline])
        body = _multipart("alternative", [body, html])
    root = _multipart("mixed", [body, *attached]) if attached else body

    if message.proxy_address:
        sender = _address(message.proxy_name or message.sender_name, message.proxy_address)
    else:
        sender = _address(message.sender_name, message.sender_address)
    headers = [
        ("From", sender),
        ("To", _address(message.recipient_name, message.recipient_address)),
        ("Subject", _header(message.subject)),
        ("Date", format_datetime(message.receive_date)),
        ("Message-ID", message.smtp_message_id),
        *((name, _header(value)) for name, value in (message.headers or {}).items()),
        ("MIME-Version", "1.0"),
    ]
    # Our headers first, then the Content-Type of the body part that became the root: its
    # headers are taken off and put back after ours (compat32 stores values as they are set).
    content_headers = root.items()
    for name in {name for name, _ in content_headers}:
        del root[name]
    headers_write(root, headers)
    for name, value in content_headers:
        root[name] = value
    return root.as_bytes(policy=WIRE)
