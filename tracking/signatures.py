"""The one signing mechanism for what we put in mail and must trust when it comes back: the
tokens of pixel and click URLs (tracking/engagement/tokens.py) and the VERP return paths that
bounces are sent to (tracking/delivery/verp.py).

A signature is Django's salted HMAC-SHA256 of the value, keyed by SECRET_KEY, with a salt of
its own per purpose (a pixel token is not a click token, neither is a bounce address). A
signature is checked against SECRET_KEY and then each key of SECRET_KEY_FALLBACKS, as
Django's own signing and password-reset tokens are, so rotating the key keeps working what
was mailed before:

1. put the new key in SECRET_KEY and move the old one to SECRET_KEY_FALLBACKS, on every host;
   new mail is signed with the new key, links and bounce addresses of mail in flight still
   verify with the old one;
2. once that mail no longer matters (weeks for bounces, as long as you want old click links
   to work), drop the old key from SECRET_KEY_FALLBACKS: what it signed is refused from then
   on (a click is a 404, a bounce address is refused at RCPT TO).
"""

from __future__ import annotations

import hmac
from collections.abc import Iterator

from django.conf import settings
from django.utils.crypto import salted_hmac

# Bytes of an untruncated signature (SHA-256).
FULL = 32


def signature(value: str, *, salt: str, size: int = FULL) -> bytes:
    """The signature of `value` for the purpose named by `salt`, with the current key,
    truncated to its first `size` bytes (where it must fit a short field, an address)."""
    return _hmac(value, salt=salt, key=settings.SECRET_KEY)[:size]


def signature_is_valid(value: str, candidate: bytes, *, salt: str, size: int = FULL) -> bool:
    """Whether `candidate` is the `size`-byte signature of `value` for `salt` under the current
    key or one of SECRET_KEY_FALLBACKS. A candidate of any other length is refused, so a
    shortened signature never passes."""
    if len(candidate) != size:
        return False
    return any(
        hmac.compare_digest(_hmac(value, salt=salt, key=key)[:size], candidate) for key in _keys()
    )


def _keys() -> Iterator[str]:
    yield settings.SECRET_KEY
    yield from settings.SECRET_KEY_FALLBACKS


def _hmac(value: str, *, salt: str, key: str) -> bytes:
    return salted_hmac(salt, value, secret=key, algorithm="sha256").digest()
