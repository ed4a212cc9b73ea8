"""DKIM signing of outgoing mail (RFC 6376), in the worker, with dkimpy.

Which keys sign a message (only active keys: tracking/services/dkim_keys.py):
1. the key of the From header's domain, or of its nearest parent domain we hold a key for: the
   signature aligned with From, which DMARC asks for. Mail From a proxy address, a reverse
   alias or a customer domain with a key gets one.
2. the key of BOUNCE_DOMAIN, the domain of every message's envelope sender (the VERP
   Return-Path, tracking/delivery/verp.py), unless it already signed as 1. Forwarded alias mail
   that keeps its writer's From gets this one only: we vouch for what we relay.

The aligned signature goes on top (receivers that look at one signature look at the first).
Each is computed over the message as it leaves, so neither covers the other (dkimpy never signs
DKIM-Signature headers) and a signature the writer made stays below, untouched.

Every message is signed on every attempt, just before it is handed to the MX, with relaxed/
relaxed canonicalisation over dkimpy's recommended headers. A key that cannot sign (a broken
PEM) is logged and the message goes out without that signature: a key problem must not stall
delivery.
"""

from __future__ import annotations

import logging
from email.parser import BytesHeaderParser
from email.policy import compat32
from email.utils import getaddresses

import dkim
from django.conf import settings

from tracking.addresses import address_domain
from tracking.caching import ProcessCache
from tracking.models import DkimKey

log = logging.getLogger(__name__)

# Active keys by domain, read at most once a minute by each worker process (and at once after
# this process changed one: TrackingConfig.ready and dkim_keys._keys_changed).
KEYS_TTL = 60.0
dkim_key_cache: ProcessCache[dict[str, DkimKey]] = ProcessCache(ttl=lambda: KEYS_TTL)


def _active_keys() -> dict[str, DkimKey]:
    keys = dkim_key_cache.get("keys")
    if keys is None:
        active = DkimKey.objects.filter(status=DkimKey.Status.ACTIVE)
        keys = {key.domain: key for key in active}
        dkim_key_cache.put("keys", keys)
    return keys


def signing_keys(from_domain: str) -> list[DkimKey]:
    """The keys that sign a message From this domain, in the order their signatures go on
    top of each other (see the module's docstring)."""
    keys = _active_keys()
    signers = []
    labels = from_domain.lower().rstrip(".").split(".")
    for i in range(len(labels) - 1):  # the domain, then its parents (not the bare TLD)
        key = keys.get(".".join(labels[i:]))
        if key is not None:
            signers.append(key)
            break
    envelope = keys.get(settings.BOUNCE_DOMAIN.lower())
    if envelope is not None and envelope not in signers:
        signers.append(envelope)
    return signers


def from_domain(data: bytes) -> str:
    """The domain of the (first) From address in a message's header block."""
    end = data.find(b"\r\n\r\n")
    head = data if end < 0 else data[: end + 2]
    headers = BytesHeaderParser(policy=compat32).parsebytes(head, headersonly=True)
    addresses = getaddresses([str(value) for value in headers.get_all("From", [])])
    for _, address in addresses:
        if "@" in address:
            return address_domain(address)
    return ""


def dkim_sign(data: bytes) -> bytes:
    """The message with our DKIM-Signature headers on top, or as it was when no key applies."""
    if not _active_keys():
        return data
    signatures = [_signature(key, data) for key in signing_keys(from_domain(data))]
    return b"".join(signatures) + data


def arc_seal(data: bytes) -> bytes:
    """Forwarded mail with our ARC set on top (RFC 8617, dkimpy's arc_sign): the
    Authentication-Results we computed when it arrived (the header in SMTP_HELO_NAME's name
    that routing put on it) sealed by the key that signs its From, so a receiver that honours
    ARC can trust the writer's original authentication, which our changes to the message
    broke. A message without our Authentication-Results, or with no key to seal with, goes
    as it is; so does one whose chain dkimpy cannot extend (logged)."""
    keys = signing_keys(from_domain(data)) if _active_keys() else []
    if not keys:
        return data
    key = keys[0]
    try:
        headers = dkim.arc_sign(
            data,
            key.selector.encode(),
            key.domain.encode(),
            key.private_key.encode(),
            settings.SMTP_HELO_NAME.encode(),
            linesep=b"\r\n",
        )
    except Exception:
        log.exception("ARC sealing as %s failed; the message goes out without it", key)
        return data
    return b"".join(headers) + data


def _signature(key: DkimKey, data: bytes) -> bytes:
    try:
        return dkim.sign(
            data,
            key.selector.encode(),
            key.domain.encode(),
            key.private_key.encode(),
            canonicalize=(b"relaxed", b"relaxed"),
            linesep=b"\r\n",
        )
    except Exception:
        log.exception("DKIM signing as %s failed; the message goes out without it", key)
        return b""
