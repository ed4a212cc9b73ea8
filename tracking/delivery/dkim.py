"""DKIM signing of outgoing mail (RFC 6376), in the worker, with dkimpy.

Which key signs a message:
- the key of the From header's domain, or of the nearest parent domain we hold a key for (a
  signature aligned with From, which DMARC asks for);
- otherwise the key of BOUNCE_DOMAIN (the Return-Path's domain), when we hold one: forwarded
  alias mail keeps its author's From, and is vouched for by us;
- otherwise none: the message goes out unsigned.

Every message is signed on every attempt, just before it is handed to the MX, with relaxed/
relaxed canonicalisation over dkimpy's recommended headers. A key that cannot sign (a broken
PEM) is logged and the message goes out unsigned: a key problem must not stall delivery.
"""

from __future__ import annotations

import base64
import logging
from email.parser import BytesHeaderParser
from email.policy import compat32
from email.utils import getaddresses

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from django.conf import settings

from tracking.caching import ProcessCache
from tracking.models import DkimKey

log = logging.getLogger(__name__)

# Active keys by domain, read at most once a minute by each worker process (and at once after
# this process changed one, TrackingConfig.ready).
KEYS_TTL = 60.0
dkim_key_cache: ProcessCache[dict[str, DkimKey]] = ProcessCache(ttl=lambda: KEYS_TTL)


class InvalidKey(ValueError):
    pass


def dkim_key_generate(*, bits: int = 2048) -> tuple[str, str]:
    """A new RSA key: (private key PEM, public key as base64 DER: the DNS p= value)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return _pem(key), _public(key)


def dkim_key_public(private_key_pem: str) -> str:
    """The DNS p= value of a PEM private key; InvalidKey when it is not an RSA key."""
    try:
        key = serialization.load_pem_private_key(private_key_pem.encode(), password=None)
    except (ValueError, TypeError) as exc:
        raise InvalidKey(f"not a usable PEM private key: {exc}") from None
    if not isinstance(key, rsa.RSAPrivateKey):
        raise InvalidKey("only RSA keys are supported")
    if key.key_size < 1024:
        raise InvalidKey(f"a {key.key_size}-bit key is too weak: use 2048 bits")
    return _public(key)


def _pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def _public(key: rsa.RSAPrivateKey) -> str:
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(der).decode()


def _active_keys() -> dict[str, DkimKey]:
    keys = dkim_key_cache.get("keys")
    if keys is None:
        keys = {key.domain: key for key in DkimKey.objects.filter(is_active=True)}
        dkim_key_cache.put("keys", keys)
    return keys


def signing_key(from_domain: str) -> DkimKey | None:
    """The key that signs a message From this domain (see the module's docstring)."""
    keys = _active_keys()
    labels = from_domain.lower().rstrip(".").split(".")
    for i in range(len(labels) - 1):  # the domain, then its parents (not the bare TLD)
        key = keys.get(".".join(labels[i:]))
        if key is not None:
            return key
    return keys.get(settings.BOUNCE_DOMAIN.lower())


def from_domain(data: bytes) -> str:
    """The domain of the (first) From address in a message's header block."""
    end = data.find(b"\r\n\r\n")
    head = data if end < 0 else data[: end + 2]
    headers = BytesHeaderParser(policy=compat32).parsebytes(head, headersonly=True)
    addresses = getaddresses([str(value) for value in headers.get_all("From", [])])
    for _, address in addresses:
        if "@" in address:
            return address.rpartition("@")[2].strip().lower()
    return ""


def dkim_sign(data: bytes) -> bytes:
    """The message with our DKIM-Signature on top, or as it was when no key applies."""
    key = signing_key(from_domain(data)) if _active_keys() else None
    if key is None:
        return data
    try:
        signature = dkim.sign(
            data,
            key.selector.encode(),
            key.domain.encode(),
            key.private_key.encode(),
            canonicalize=(b"relaxed", b"relaxed"),
            linesep=b"\r\n",
        )
    except Exception:
        log.exception("DKIM signing as %s failed; the message goes out unsigned", key)
        return data
    return signature + data


def dkim_key_check(*, domain: str, selector: str, private_key: str = "") -> tuple[str, str, str]:
    """The domain and selector, normalised, and the public key (the DNS p= value) of the PEM
    key when one is given ("" otherwise); InvalidKey when any of them is not usable."""
    domain = domain.strip().lower().rstrip(".")
    selector = selector.strip().lower()
    if "." not in domain or not all(_is_label(part) for part in domain.split(".")):
        raise InvalidKey(f"{domain!r} is not a domain name")
    if not _is_label(selector):
        raise InvalidKey(f"{selector!r} is not a valid selector (letters, digits, hyphens)")
    public = dkim_key_public(private_key) if private_key.strip() else ""
    return domain, selector, public


def dkim_key_add(
    *, domain: str, selector: str = "iovox", private_key: str = "", bits: int = 2048
) -> DkimKey:
    """Sign mail as `domain` from now on, with the given PEM key or a new one; replaces the
    domain's key if it had one. Publish `dns_name` TXT `dns_value` before using it."""
    domain, selector, public = dkim_key_check(
        domain=domain, selector=selector, private_key=private_key
    )
    if not public:
        private_key, public = dkim_key_generate(bits=bits)
    key, _ = DkimKey.objects.update_or_create(
        domain=domain,
        defaults={
            "selector": selector,
            "private_key": private_key,
            "public_key": public,
            "is_active": True,
        },
    )
    return key


def _is_label(value: str) -> bool:
    return (
        0 < len(value) <= 63
        and value.isascii()
        and value.replace("-", "").isalnum()
        and not value.startswith("-")
        and not value.endswith("-")
    )
