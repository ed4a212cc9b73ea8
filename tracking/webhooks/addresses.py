"""Where a webhook may point: http(s) URLs whose host resolves only to public addresses that
are not ours (no SSRF into our network or the cloud's metadata service).

Checked when a URL is saved and again before every batch is posted, since DNS can change
after the check (a rebinding attack); the post itself then goes through requests-hardened,
which connects to the address it checked (private, loopback and link-local refused) rather
than resolving the name a second time. WEBHOOK_ALLOW_PRIVATE=1 lifts the address rules for
tests and development.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from django.conf import settings

from tracking.caching import ProcessCache

SCHEMES = ("http", "https")
MAX_URL_LENGTH = 2000

_own_addresses: ProcessCache[frozenset] = ProcessCache(ttl=lambda: 300)


class WebhookUrlError(ValueError):
    """The URL may not be used; the message says why, to follow the field name."""


def webhook_url_check(url: str, *, resolve: bool = True) -> str:
    """The URL, if a webhook may post to it; else WebhookUrlError. With `resolve`, its host's
    addresses are looked up and each must be allowed."""
    if not isinstance(url, str) or not url:
        raise WebhookUrlError("is required")
    if len(url) > MAX_URL_LENGTH:
        raise WebhookUrlError(f"must be at most {MAX_URL_LENGTH} characters")
    if any(ord(ch) < 33 or ord(ch) == 127 for ch in url):
        raise WebhookUrlError("cannot contain spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
    except ValueError:
        raise WebhookUrlError("is not a valid URL") from None
    if parts.scheme.lower() not in SCHEMES:
        raise WebhookUrlError("must be an http or https URL")
    host = parts.hostname
    if not host:
        raise WebhookUrlError("must name a host")
    if resolve and not settings.WEBHOOK_ALLOW_PRIVATE:
        for address in host_addresses(host, port):
            reason = address_refusal(address)
            if reason:
                raise WebhookUrlError(f"resolves to {address}, {reason}: not allowed")
    return url


def host_addresses(host: str, port: int) -> list[str]:
    """Every address `host` resolves to (WebhookUrlError when it resolves to none)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        raise WebhookUrlError(f"has a host that does not resolve ({host})") from None
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        raise WebhookUrlError(f"has a host that does not resolve ({host})")
    return addresses


def address_refusal(address: str) -> str:
    """Why a webhook may not post to `address` ("" when it may)."""
    ip = ipaddress.ip_address(address.split("%")[0])
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return "a loopback address"
    if ip.is_link_local:
        return "a link-local address"
    if ip.is_private:
        return "a private address"
    if ip.is_multicast or ip.is_reserved or ip.is_unspecified or not ip.is_global:
        return "not a public address"
    if (
        any(ip in network for network in settings.WEBHOOK_DENIED_NETWORKS)
        or str(ip) in own_addresses()
    ):
        return "one of our own addresses"
    return ""


def own_addresses() -> frozenset[str]:
    """The addresses of our own public host (TRACKING_BASE_URL's), looked up every 5 minutes."""
    cached = _own_addresses.get("own")
    if cached is None:
        host = urlsplit(settings.TRACKING_BASE_URL).hostname or ""
        try:
            cached = frozenset(str(info[4][0]) for info in socket.getaddrinfo(host, None))
        except (OSError, UnicodeError):
            cached = frozenset()
        _own_addresses.put("own", cached)
    return cached
