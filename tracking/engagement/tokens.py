"""Signed tokens for pixel and click URLs: the one module that signs and checks them.

A pixel token names a message; a click token names a message and the URL to send the reader
to. Both are `payload.signature`, URL-safe base64 with no padding, signed by
tracking/signatures.py (HMAC-SHA256 keyed by SECRET_KEY; SECRET_KEY_FALLBACKS keep the links
of mail sent before a key rotation working). Each kind has its own salt: a pixel token is not
a click token. Anything that does not verify (tampered, truncated, signed with a key that is
no longer listed) is `None`, which the views answer with 404, so a click URL can never
redirect anywhere we did not sign.
"""

from __future__ import annotations

import base64
import binascii
import uuid
import zlib
from dataclasses import dataclass

from django.conf import settings

from tracking import signatures

# The paths of the two endpoints (also routed in `tracking.engagement.urls`).
OPEN_PATH = "/t/o/"
CLICK_PATH = "/t/c/"
# The salts Django's Signer derived from "tracking.engagement.open" and ".click", which
# signed the tokens of earlier mail: the same signatures, so those links keep working.
_OPEN_SALT = "tracking.engagement.opensigner"
_CLICK_SALT = "tracking.engagement.clicksigner"
# "." is outside the URL-safe base64 alphabet, so it can separate payload and signature.
_SEP = "."
# First byte of a click payload: how the URL that follows is stored.
_RAW = b"r"
_DEFLATED = b"z"
# Shorter URLs do not shrink when deflated.
_DEFLATE_FROM = 100


@dataclass(frozen=True)
class ClickTarget:
    message_id: uuid.UUID
    url: str


def _b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64decode(text: str) -> bytes:
    """Strict: the decoder skips characters outside the alphabet, so only text that is the
    encoding of what it decodes to is accepted (one token per payload, no variants)."""
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if _b64encode(data) != text:
        raise ValueError("not canonical URL-safe base64")
    return data


def _sign(payload: bytes, salt: str) -> str:
    text = _b64encode(payload)
    return f"{text}{_SEP}{_b64encode(signatures.signature(text, salt=salt))}"


def _unsign(token: str, salt: str) -> bytes | None:
    text, sep, signature = token.rpartition(_SEP)
    try:
        if sep and signatures.signature_is_valid(text, _b64decode(signature), salt=salt):
            return _b64decode(text)
    except (binascii.Error, ValueError):
        pass
    return None


def open_token(message_id: uuid.UUID | str) -> str:
    """The token of a message's pixel: 22 characters of message id and its signature."""
    return _sign(uuid.UUID(str(message_id)).bytes, _OPEN_SALT)


def open_token_message_id(token: str) -> uuid.UUID | None:
    data = _unsign(token, _OPEN_SALT)
    if data is None or len(data) != 16:
        return None
    return uuid.UUID(bytes=data)


def click_token(message_id: uuid.UUID | str, url: str) -> str:
    """The token of one link of one message. Long URLs are deflated when that is shorter."""
    raw = url.encode("utf-8")
    body = _RAW + raw
    if len(raw) > _DEFLATE_FROM:
        deflated = zlib.compress(raw)
        body = _DEFLATED + deflated if len(deflated) < len(raw) else body
    return _sign(uuid.UUID(str(message_id)).bytes + body, _CLICK_SALT)


def click_token_target(token: str) -> ClickTarget | None:
    data = _unsign(token, _CLICK_SALT)
    if data is None or len(data) < 17:
        return None
    message_id, kind, body = uuid.UUID(bytes=data[:16]), data[16:17], data[17:]
    if kind not in (_RAW, _DEFLATED):
        return None
    try:
        raw = zlib.decompress(body) if kind == _DEFLATED else body
        return ClickTarget(message_id=message_id, url=raw.decode("utf-8"))
    except (zlib.error, UnicodeDecodeError):
        return None


def open_url(message_id: uuid.UUID | str) -> str:
    """The pixel's absolute URL, on TRACKING_BASE_URL."""
    return f"{settings.TRACKING_BASE_URL}{OPEN_PATH}{open_token(message_id)}.gif"


def click_url(message_id: uuid.UUID | str, url: str) -> str:
    """The absolute click URL that records a click and redirects to `url`."""
    return f"{settings.TRACKING_BASE_URL}{CLICK_PATH}{click_token(message_id, url)}"


def click_url_target(url: str) -> ClickTarget | None:
    """What one of our own click URLs points at, or None for any other URL."""
    prefix = f"{settings.TRACKING_BASE_URL}{CLICK_PATH}"
    return click_token_target(url[len(prefix) :]) if url.startswith(prefix) else None


def is_open_url(url: str) -> bool:
    """Whether `url` is one of our pixels (of any message)."""
    prefix = f"{settings.TRACKING_BASE_URL}{OPEN_PATH}"
    return url.startswith(prefix) and url.endswith(".gif")
