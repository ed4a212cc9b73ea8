"""Reading and rewriting received messages.

Headers are edited as raw lines and the body is passed on byte for byte, so the MIME structure,
the transfer encodings and every attachment reach the recipient exactly as they were sent;
only a parse of the header block is needed to read From, Subject and the loop signals. A
message that does not parse (a missing blank line, bad encodings, broken address headers) is
still read as far as it goes: nothing here raises on bad input.
"""

from __future__ import annotations

import email
import email.policy
import email.utils
import re
from dataclasses import dataclass, field
from email.header import decode_header, make_header

from django.conf import settings
from django.utils import timezone

from tracking.text import text_safe

# Our own loop header: every message we forward or relay carries it, so a message that comes
# back to us with it went round a loop (a destination that forwards back to an alias).
LOOP_HEADER = "X-Iovox-Loop"
# RFC 5321 section 6.3: a hop count is how loops through other systems are found. Postfix
# refuses at 50 Received headers; real mail rarely has more than 15.
MAX_HOPS = 25

# Headers never forwarded: the envelope-derived trace of the last hop. (Headers that pass
# themselves off as ours are dropped too: `forward_headers`.)
FORWARD_DROP = {"return-path", "delivered-to", "x-original-to"}
# The only headers of a party's message that reach the other party: what a mail client needs to
# show and thread it. From, To, Message-ID, In-Reply-To and References are written by us;
# everything else (Received lines, X-Originating-IP, X-Sender, Resent-*, signatures, Reply-To,
# Cc, client and server marks, whatever comes next) could name the writer or their machine.
RELAY_KEEP = frozenset(
    {
        "subject",
        "date",
        "mime-version",
        "content-type",
        "content-transfer-encoding",
        "content-disposition",
        "content-language",
        "thread-topic",  # Outlook threads by these two
        "thread-index",
        "importance",
        "priority",
        "x-priority",
    }
)
# Our own header namespace: a message from outside carrying one is not passed on with it.
OWN_HEADER_PREFIX = "x-iovox-"

_HEADER_END = re.compile(rb"\r?\n\r?\n")
_LINE = re.compile(rb"[^\n]*\n|[^\n]+$")


def split_message(raw: bytes) -> tuple[bytes, bytes]:
    """The header block (with its line endings) and the body (after the blank line)."""
    match = _HEADER_END.search(raw)
    if match is None:
        return (raw if raw.endswith(b"\n") else raw + b"\r\n"), b""
    return raw[: match.start()] + b"\r\n", raw[match.end() :]


def header_fields(header_block: bytes) -> list[tuple[str, bytes]]:
    """The header fields in order, each as (lower-case name, raw bytes with folded lines)."""
    fields: list[tuple[str, bytes]] = []
    for line in _LINE.findall(header_block):
        if line[:1] in (b" ", b"\t") and fields:
            name, value = fields[-1]
            fields[-1] = (name, value + line)
        elif line.strip():
            name = line.split(b":", 1)[0].strip().decode("ascii", "replace").lower()
            fields.append((name, line))
    return fields


def _crlf(line: bytes) -> bytes:
    return line.rstrip(b"\r\n").replace(b"\r\n", b"\n").replace(b"\n", b"\r\n") + b"\r\n"


# The name of each header field: a line that is not a continuation, up to its colon.
_FIELD_NAME = re.compile(rb"^([^ \t\r\n:][^\r\n:]*?)[ \t]*:", re.MULTILINE)


def loop_reason(raw: bytes) -> str:
    """Why this message must not be passed on again, or "" when it may be. Only the header
    names are read, with one regular expression: the SMTP server asks this of every message
    before it answers, so the header block is searched in place (no copy of a large message)."""
    match = _HEADER_END.search(raw)
    end = match.start() if match else len(raw)
    names = [name.decode("ascii", "replace").lower() for name in _FIELD_NAME.findall(raw, 0, end)]
    if LOOP_HEADER.lower() in names:
        return f"mail loop: the message already carries our {LOOP_HEADER} header"
    hops = names.count("received")
    if hops > MAX_HOPS:
        return f"mail loop: {hops} Received headers, more than the limit of {MAX_HOPS}"
    return ""


@dataclass
class Envelope:
    """What the SMTP conversation told us, beside the message itself."""

    mail_from: str = ""
    helo: str = ""
    peer: str = ""


def decode_raw_header(value: bytes) -> str:
    """A header value's bytes as text: UTF-8 (RFC 6532 allows it, and most 8-bit headers are
    UTF-8), else Windows-1252 (what the rest are), folding undone."""
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        text = value.decode("cp1252", "replace")
    return text_safe(" ".join(text.split()))


@dataclass
class ParsedMessage:
    """The parts of a received message the router needs, read without ever raising."""

    raw: bytes
    # lower-case name -> raw values, in order; decoded when asked for (most never are: long
    # DKIM, ARC and Received values)
    headers: dict[str, list[bytes]]
    from_address: str = ""
    from_name: str = ""
    subject: str = ""
    message_id: str = ""
    problems: list[str] = field(default_factory=list)

    @classmethod
    def parse(cls, raw: bytes) -> ParsedMessage:
        header_block, _ = split_message(raw)
        headers: dict[str, list[bytes]] = {}
        for name, line in header_fields(header_block):
            _, colon, value = line.partition(b":")
            if colon:
                headers.setdefault(name, []).append(value)
        parsed = cls(raw=raw, headers=headers)
        parsed.from_name, parsed.from_address = parsed._address("from")
        parsed.subject = parsed.header_text("subject")
        parsed.message_id = parsed.header_text("message-id")
        return parsed

    def header(self, name: str) -> str | None:
        """The first value of a header, as it stands (RFC 2047 words not decoded)."""
        values = self.headers.get(name.lower())
        return decode_raw_header(values[0]) if values else None

    def header_text(self, name: str) -> str:
        """A header with its RFC 2047 encoded words decoded; "" when absent."""
        value = self.header(name)
        return _decode_words(value, self.problems, name) if value else ""

    def header_count(self, name: str) -> int:
        return len(self.headers.get(name.lower(), []))

    def _address(self, name: str) -> tuple[str, str]:
        value = self.header(name)
        if value is None:
            return "", ""
        display, address = email.utils.parseaddr(value)
        if "@" not in address:
            self.problems.append(f"{name} header has no address: {value[:200]!r}")
            return "", ""
        display = _decode_words(display, self.problems, name) if display else ""
        return display, address.strip()

    @property
    def auto_submitted(self) -> bool:
        """RFC 3834 Auto-Submitted other than "no", or the older signals of an auto-reply."""
        value = self.header_text("auto-submitted").lower()
        if value and value.split(";")[0].strip() != "no":
            return True
        precedence = self.header_text("precedence").lower()
        return precedence in {"auto_reply", "bulk", "junk", "list"} or bool(
            self.header("x-autoreply") or self.header("x-autorespond")
        )

    @property
    def is_delivery_report(self) -> bool:
        """A DSN or another machine report (RFC 6522 multipart/report)."""
        content_type = self.header_text("content-type").lower()
        return content_type.startswith("multipart/report")


_ENCODED_WORD = re.compile(r"=\?[^?\s]+\?[bBqQ]\?[^?\s]*\?=")


def _decode_words(value: str, problems: list[str], name: str) -> str:
    """RFC 2047 encoded words decoded, in a header that may also hold raw UTF-8 text."""
    try:
        if value.isascii():
            return text_safe(" ".join(str(make_header(decode_header(value))).split()))
        decoded = _ENCODED_WORD.sub(lambda m: str(make_header(decode_header(m.group()))), value)
        return text_safe(decoded)
    except (ValueError, LookupError, UnicodeError) as exc:
        problems.append(f"{name} header is not readable: {exc}")
        return value


def received_header(*, envelope: Envelope, recipients: list[str], queue_id: str) -> bytes:
    """The trace line every SMTP server adds on receipt (RFC 5321 section 4.4)."""
    for_clause = f"\r\n\tfor <{recipients[0]}>" if len(recipients) == 1 else ""
    line = (
        f"Received: from {envelope.helo or 'unknown'} ({envelope.peer or 'unknown'})\r\n"
        f"\tby {settings.SMTP_HELO_NAME} (iovox inbound) with ESMTP id {queue_id}{for_clause};"
        f"\r\n\t{email.utils.format_datetime(timezone.now())}\r\n"
    )
    return line.encode("ascii", "replace")


def format_address(name: str, address: str) -> str:
    """ "Name <address>", the name RFC 2047-encoded when it is not plain ASCII."""
    return email.utils.formataddr((name, address), charset="utf-8") if name else address


def forward_headers(
    raw: bytes, *, prepend: list[tuple[str, str]], replace: frozenset[str] = frozenset()
) -> bytes:
    """The message as forwarded: `prepend` headers first (trace order), the FORWARD_DROP
    ones and those in `replace` (lower-case names we write anew) removed, and so are those
    that pass themselves off as ours (our X-Iovox- names, an Authentication-Results in our
    name, RFC 8601 section 5), body untouched."""
    header_block, body = split_message(raw)
    kept: list[bytes] = [_header_line(name, value) for name, value in prepend]
    for name, line in header_fields(header_block):
        if (
            name in FORWARD_DROP
            or name in replace
            or name.startswith(OWN_HEADER_PREFIX)
            or _claims_our_results(name, line)
        ):
            continue
        kept.append(_crlf(line))
    return b"".join(kept) + b"\r\n" + body


def keep_headers(raw: bytes, *, keep: frozenset[str], prepend: list[tuple[str, str]]) -> bytes:
    """The message with only the `keep` headers of its own, `prepend` ones first (ours, in
    trace order), body untouched."""
    header_block, body = split_message(raw)
    kept: list[bytes] = [_header_line(name, value) for name, value in prepend]
    kept += [_crlf(line) for name, line in header_fields(header_block) if name in keep]
    return b"".join(kept) + b"\r\n" + body


def _claims_our_results(name: str, line: bytes) -> bool:
    if name != "authentication-results":
        return False
    value = decode_raw_header(line.partition(b":")[2])
    authserv_id = re.sub(r"\([^)]*\)", " ", value).split(";")[0].strip().lower()
    return authserv_id == settings.SMTP_HELO_NAME.lower()


def _header_line(name: str, value: str) -> bytes:
    # Values we write are ASCII already (addresses, RFC 2047-encoded names); never let a CR or
    # LF from a party's data start a header of its own.
    value = re.sub(r"[\r\n]+", " ", value)
    return f"{name}: {value}\r\n".encode("ascii", "replace")


@dataclass
class Content:
    text: str = ""
    html: str = ""
    problems: list[str] = field(default_factory=list)


def extract_content(raw: bytes) -> Content:
    """The first text/plain and text/html bodies that are not attachments, best effort, for
    search and the portal: the message itself travels as its raw bytes, so a part we cannot
    decode here costs only this copy."""
    try:
        return content_of(email.message_from_bytes(raw, policy=email.policy.compat32))
    except Exception as exc:  # noqa: BLE001 - a broken message must never stop routing
        return Content(problems=[f"content not readable: {type(exc).__name__}: {exc}"])


def content_of(message) -> Content:
    """`extract_content` of a message parsed already (compat32)."""
    content = Content()
    try:
        for part in message.walk():
            subtype = {"text/plain": "text", "text/html": "html"}.get(part.get_content_type())
            if subtype is None or getattr(content, subtype):
                continue
            if part.get_content_disposition() == "attachment":
                continue
            setattr(content, subtype, _part_text(part, content))
            if content.text and content.html:
                break
    except Exception as exc:  # noqa: BLE001 - a broken message must never stop routing
        content.problems.append(f"content not readable: {type(exc).__name__}: {exc}")
    return content


def _part_text(part, content: Content) -> str:
    payload = part.get_payload(decode=True) or b""
    charset = part.get_content_charset() or "utf-8"
    try:
        return text_safe(payload.decode(charset))
    except (LookupError, UnicodeDecodeError) as exc:
        content.problems.append(f"{part.get_content_type()} part not decodable as {charset}: {exc}")
        return text_safe(payload.decode("utf-8", "replace"))
