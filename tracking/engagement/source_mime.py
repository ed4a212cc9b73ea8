"""Tracking for mail we pass on as it came (forwarded and relayed `source_mime`).

Every text/html body part gets the pixel and click URLs; everything else keeps its bytes: the
message is parsed with the compat32 policy, which keeps headers and untouched parts as they
were written, and only the rewritten parts are encoded again. A rewritten part keeps its
charset and its transfer encoding (base64 stays base64); a 7bit or 8bit part becomes
quoted-printable, since click URLs make lines longer and SMTP caps them at 998 octets.
HTML attachments and messages attached as message/rfc822 are not our body and are left alone.
"""

from __future__ import annotations

import uuid
from email import base64mime, message_from_bytes, quoprimime
from email.message import Message as EmailMessage
from email.policy import Compat32, compat32

from tracking.engagement.rewrite import html_add_tracking


class HeadersAsParsedPolicy(Compat32):
    """compat32 that writes each header as it was parsed, folds and all, in CRLF lines.

    The stock policy sends every header through email.header.Header again, which was most of
    the cost of a forwarded message's delivery, for the same text. Headers the parser did not
    give us (values that are not plain text) still go the stock way.
    """

    def fold_binary(self, name: str, value) -> bytes:
        if not isinstance(value, str):
            return super().fold_binary(name, value)
        value = value.replace("\r\n", "\n").replace("\n", self.linesep)
        try:
            # surrogateescape: the parser's stand-ins for raw 8-bit header bytes
            return f"{name}: {value}{self.linesep}".encode("ascii", "surrogateescape")
        except UnicodeEncodeError:
            return super().fold_binary(name, value)


# No refolding: headers go out as they came (a DKIM signature over them stays valid).
_WIRE = HeadersAsParsedPolicy(linesep="\r\n", max_line_length=0)


def mime_add_tracking(raw: bytes, *, message_id: uuid.UUID | str) -> bytes:
    """Return the raw message with tracking in each of its HTML body parts."""
    message = mime_parse(raw)
    if not mime_tree_add_tracking(message, message_id=message_id):
        return raw
    return mime_bytes(message)


def mime_parse(raw: bytes) -> EmailMessage:
    """The message as a tree that `mime_tree_add_tracking` can change and `mime_bytes` write
    back with its untouched headers and parts as they came."""
    return message_from_bytes(raw, policy=compat32)


def mime_bytes(message: EmailMessage) -> bytes:
    return message.as_bytes(policy=_WIRE)


def mime_tree_add_tracking(message: EmailMessage, *, message_id: uuid.UUID | str) -> bool:
    """Put tracking into each HTML body part of a parsed message; whether anything changed."""
    if not _track_parts(message, message_id=message_id):
        return False
    # The sender's DKIM signature covered the body we just changed: it can only fail now, and
    # a failing signature hurts more with some receivers than none at all (RFC 6376 6.1).
    del message["DKIM-Signature"]
    return True


def _track_parts(part: EmailMessage, *, message_id: uuid.UUID | str) -> bool:
    if part.is_multipart():
        if part.get_content_maintype() == "message":
            return False  # an attached message: not ours to change
        changed = False
        for child in part.get_payload():
            changed = _track_parts(child, message_id=message_id) or changed
        return changed
    if part.get_content_type() != "text/html" or part.get_content_disposition() == "attachment":
        return False
    charset = part.get_content_charset() or "us-ascii"
    payload = part.get_payload(decode=True) or b""
    try:
        html = payload.decode(charset)
    except (LookupError, UnicodeDecodeError):
        return False  # an unknown or wrong charset: sent as it came rather than garbled
    tracked = html_add_tracking(html, message_id=message_id)
    if tracked == html:
        return False
    _set_text(part, tracked, charset)
    return True


def _set_text(part: EmailMessage, text: str, charset_name: str) -> None:
    """The part's body is now `text`, in its declared charset and transfer encoding (base64
    stays base64, anything else becomes quoted-printable). Its headers stay as they were,
    in their order, but for the Content-Transfer-Encoding value: the payload is encoded
    here rather than by `set_payload` with a charset, which rewrites Content-Type and moves
    the headers it touches (and was a sixth of routing a message)."""
    encoding = (part.get("Content-Transfer-Encoding") or "").strip().lower()
    try:
        body = text.encode(charset_name)
    except (LookupError, UnicodeEncodeError):
        # The new URLs are ASCII, so a charset that cannot hold the text any more cannot
        # happen; utf-8 would be the honest fallback.
        body = text.encode("utf-8")
        part.set_param("charset", "utf-8")
    if encoding == "base64":
        part.set_payload(base64mime.body_encode(body, maxlinelen=76, eol="\n"))
    else:
        encoding = "quoted-printable"
        part.set_payload(quoprimime.body_encode(body.decode("latin-1"), maxlinelen=76, eol="\n"))
    if "Content-Transfer-Encoding" in part:
        part.replace_header("Content-Transfer-Encoding", encoding)
    else:
        part["Content-Transfer-Encoding"] = encoding
