"""VERP return paths: `b+<message uuid hex>.<hmac>@BOUNCE_DOMAIN`.

The address names the message, so a bounce sent to it finds the original; the signature
(tracking/signatures.py: keyed by SECRET_KEY, and still accepted under a key moved to
SECRET_KEY_FALLBACKS) means nobody can forge a bounce address for a message they did not
send. The signature is 8 bytes in lower-case hex: the local part must stay within 64
characters (RFC 5321) and survive MTAs that change its case.
"""

from __future__ import annotations

import re
import uuid

from django.conf import settings

from tracking import signatures
from tracking.models import Message

_SALT = "tracking.delivery.verp"
_SIZE = 8
_LOCAL = re.compile(r"^b\+([0-9a-f]{32})\.([0-9a-f]{16})$")


def verp_address_for(message_id: uuid.UUID) -> str:
    signature = signatures.signature(message_id.hex, salt=_SALT, size=_SIZE).hex()
    return f"b+{message_id.hex}.{signature}@{settings.BOUNCE_DOMAIN}"


def verp_address(message: Message) -> str:
    """The envelope sender (Return-Path) of `message`."""
    return verp_address_for(message.message_id)


def verp_message_id(address: str) -> uuid.UUID | None:
    """The message a VERP address names, or None when it is not ours or the signature is bad.
    Case-insensitive, since some MTAs change the case of local parts."""
    address = address.strip().strip("<>").lower()
    local, _, domain = address.rpartition("@")
    if domain != settings.BOUNCE_DOMAIN.lower():
        return None
    match = _LOCAL.match(local)
    if match is None:
        return None
    message_hex, signature = match.groups()
    if not signatures.signature_is_valid(
        message_hex, bytes.fromhex(signature), salt=_SALT, size=_SIZE
    ):
        return None
    return uuid.UUID(hex=message_hex)
