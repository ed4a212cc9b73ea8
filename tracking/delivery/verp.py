"""VERP return paths: `b+<message uuid hex>.<hmac>@BOUNCE_DOMAIN`.

The address names the message, so a bounce sent to it finds the original; the HMAC (keyed by
SECRET_KEY) means nobody can forge a bounce address for a message they did not send.
"""

from __future__ import annotations

import hmac
import re
import uuid

from django.conf import settings
from django.utils.crypto import salted_hmac

from tracking.models import Message

_SALT = "tracking.delivery.verp"
_LOCAL = re.compile(r"^b\+([0-9a-f]{32})\.([0-9a-f]{16})$")


def _signature(message_hex: str) -> str:
    return salted_hmac(_SALT, message_hex, algorithm="sha256").hexdigest()[:16]


def verp_address_for(message_id: uuid.UUID) -> str:
    return f"b+{message_id.hex}.{_signature(message_id.hex)}@{settings.BOUNCE_DOMAIN}"


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
    if not hmac.compare_digest(signature, _signature(message_hex)):
        return None
    return uuid.UUID(hex=message_hex)
