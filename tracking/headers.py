"""What may go into an email header, and the one function that writes headers we build.

A header line ends wherever any reader of the message thinks a line ends. CR and LF are the
obvious ones, but Python's email package splits on everything `str.splitlines` does (VT, FF,
FS, GS, RS, NEL, LINE SEPARATOR, PARAGRAPH SEPARATOR), and other mail software has its own
ideas about NUL and the C1 controls. So the rule is wide: no control character at all (C0,
DEL, C1; a tab included) and no Unicode line or paragraph separator, in any value that becomes
a header. The API's serializers, the portal's forms and the admin validate with
`header_value_validator`; `headers_write` applies the same rule when a message is built, so a
value that slipped past validation still cannot split a header (Python 3.11's email package has
no `verify_generated_headers` policy to do it for us).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from email.header import Header
from email.message import Message as EmailMessage

from django.core.exceptions import ValidationError

# Cc (U+0000-U+001F, U+007F-U+009F), LINE SEPARATOR and PARAGRAPH SEPARATOR.
UNSAFE_IN_HEADER = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")
HEADER_VALUE_MESSAGE = "cannot contain line breaks or control characters"
# A field name (RFC 5322 section 2.2): printable ASCII but the colon.
HEADER_NAME = re.compile(r"^[!-9;-~]+$")


class HeaderInjection(ValueError):
    """A value would have split a header line (or a name is not a header name)."""


def header_value_unsafe(value: str) -> bool:
    return UNSAFE_IN_HEADER.search(value) is not None


def header_value_validator(value: str) -> None:
    """The Django validator (also run by DRF fields) of every value that becomes a header."""
    if isinstance(value, str) and header_value_unsafe(value):
        raise ValidationError(HEADER_VALUE_MESSAGE, code="control_character")


def header_values_check(values: dict[str, str]) -> None:
    """Raise HeaderInjection naming every value (by its name in `values`) that breaks the
    rule: the check services and the message builder make."""
    bad = sorted(name for name, value in values.items() if value and header_value_unsafe(value))
    if bad:
        raise HeaderInjection(f"{', '.join(bad)} {HEADER_VALUE_MESSAGE}")


def headers_write(message: EmailMessage, headers: Iterable[tuple[str, str | Header]]) -> None:
    """Add headers to a message being built, each name and value checked first. Every header
    of mail we build goes through here (tracking/delivery/compose.py)."""
    for name, value in headers:
        if not HEADER_NAME.match(name):
            raise HeaderInjection(f"{name!r} is not a header name")
        text = value if isinstance(value, str) else str(value)
        header_values_check({name: text})
        message[name] = value
